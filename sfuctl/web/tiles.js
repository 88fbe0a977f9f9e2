// The video tiles: one per participant, with their name and a stats overlay.

export class Tiles {
  /** resized(key, width, height): a remote tile's video now shows at that many device pixels. */
  constructor(container, resized = () => {}) {
    this.container = container;
    this.tiles = new Map(); // key -> {root, video, name, stats, hint, stream, local}
    this.observer = new ResizeObserver((entries) => {
      for (const entry of entries) {
        const key = entry.target.dataset.peerId;
        const { width, height } = entry.contentRect;
        if (this.tiles.has(key) && width > 0 && height > 0) resized(key, width * devicePixelRatio, height * devicePixelRatio);
      }
    });
  }

  /** The tile for `key` (a peer id, or "self"), created on first use. */
  ensure(key, name, local = false) {
    let tile = this.tiles.get(key);
    if (tile) {
      tile.name.textContent = name;
      return tile;
    }
    const root = element("figure", "tile no-video" + (local ? " local" : ""));
    root.dataset.peerId = key;
    const video = element("video");
    video.autoplay = true;
    video.playsInline = true;
    video.muted = local;
    const caption = element("figcaption");
    const nameLine = element("span", "name");
    nameLine.textContent = name;
    const hint = element("button", "unmute");
    hint.type = "button";
    hint.textContent = "sound is off: click to unmute";
    hint.hidden = true;
    hint.onclick = () => {
      video.muted = false;
      hint.hidden = true;
      video.play().catch(() => {});
    };
    const stats = element("pre", "stats");
    caption.append(nameLine, hint);
    root.append(video, caption, stats);
    const stream = new MediaStream();
    video.srcObject = stream;
    tile = { root, video, name: nameLine, stats, hint, stream, local };
    this.tiles.set(key, tile);
    if (local) this.container.prepend(root);
    else {
      this.container.append(root);
      this.observer.observe(root);
    }
    return tile;
  }

  addTrack(key, track) {
    const tile = this.tiles.get(key);
    if (!tile) return;
    tile.stream.addTrack(track);
    this.refresh(tile);
  }

  removeTrack(key, track) {
    const tile = this.tiles.get(key);
    if (!tile) return;
    tile.stream.removeTrack(track);
    this.refresh(tile);
  }

  setStats(key, lines) {
    const tile = this.tiles.get(key);
    if (tile) tile.stats.textContent = lines.join("\n");
  }

  /** Mark the tile of `key` (a peer id, or "self") as the one speaking; null marks none. */
  setSpeaking(key) {
    for (const [tileKey, tile] of this.tiles) tile.root.classList.toggle("speaking", tileKey === key);
  }

  remove(key) {
    const tile = this.tiles.get(key);
    if (tile) {
      this.observer.unobserve(tile.root);
      tile.root.remove();
    }
    this.tiles.delete(key);
  }

  clear() {
    for (const key of [...this.tiles.keys()]) this.remove(key);
  }

  refresh(tile) {
    tile.root.classList.toggle("no-video", tile.stream.getVideoTracks().length === 0);
    if (tile.stream.getTracks().length === 0) return;
    tile.video.play().catch((error) => {
      // Autoplay with sound needs a click on the page first (e.g. after an autojoin link): play muted.
      if (error.name !== "NotAllowedError" || tile.video.muted) return;
      tile.video.muted = true;
      tile.hint.hidden = false;
      tile.video.play().catch(() => {});
    });
  }
}

function element(tag, className = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}
