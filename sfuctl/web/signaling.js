// The client end of docs/protocol.md: requests with ids, their responses, and server notifications.

export class SignalingError extends Error {
  /** An error response from the server (code and message as sent), or a lost or silent connection. */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

export class Signaling {
  /** Open the websocket at `url`; rejects with a message that names the URL when it cannot be reached. */
  static connect(url, onNotification, onClose) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.onopen = () => resolve(new Signaling(ws, onNotification, onClose));
      ws.onerror = () => reject(new SignalingError("unreachable", `cannot reach the sfuctl server at ${url}`));
    });
  }

  constructor(ws, onNotification, onClose) {
    this.ws = ws;
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.closing = false;
    ws.onerror = null;
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = () => {
      this.failPending("closed", "the signaling connection closed");
      if (!this.closing) onClose("the connection to the server was lost");
    };
    this.onNotification = onNotification;
  }

  /** Send one request; resolves with its result, rejects with a SignalingError. */
  request(method, params = {}, timeoutMs = 10000) {
    if (this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new SignalingError("closed", "the signaling connection is closed"));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new SignalingError("timeout", `no answer to '${method}' within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Close on purpose: onClose is not called. */
  close() {
    this.closing = true;
    this.ws.close();
  }

  receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if ("ok" in message) {
      const waiter = this.pending.get(message.id);
      if (!waiter) return;
      this.pending.delete(message.id);
      clearTimeout(waiter.timer);
      if (message.ok) waiter.resolve(message.result || {});
      else waiter.reject(new SignalingError(message.error?.code || "error", message.error?.message || ""));
    } else if (typeof message.method === "string") {
      this.onNotification(message.method, message.params || {});
    }
  }

  failPending(code, text) {
    for (const waiter of this.pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(new SignalingError(code, text));
    }
    this.pending.clear();
  }
}
