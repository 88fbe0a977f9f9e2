"""Load from many machines: `sfuctl agent` processes run shares of a run's bots and a controller (`sfuctl run
--agents`, `sfuctl bots --agents`) splits the plan over them, all through one Redis (docs/agents.md)."""
