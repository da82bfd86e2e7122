// tab_presence.js: one presence status for all the tabs of a browser (FR-009, FR-033).
//
//   const presence = new TabPresence(client);        // client: a started ParleyClient
//   presence.start();
//   presence.set("away");                            // this tab: "online" (visible) or "away"
//
// The tabs share one connection (the leader tab's, static/parley.js), so the server sees one
// status for the whole browser: `online` while any tab is visible, `away` when every tab is
// hidden. That is what decides Web Push: a user away on every connection gets pushes (FR-009).
// Each tab says its status on a BroadcastChannel; every tab keeps the others' (so a new leader
// knows them at once), and the leader sends the aggregate: over its WebSocket when it has one,
// else `PUT /api/presence`. A tab repeats its status every `repeatMs`; a tab not heard from for
// three times that (crashed, never said goodbye) no longer counts, so it cannot keep the user
// "online" for good. After every (re)connection the leader sends the status again: a new
// connection starts online on the server.

const CHANNEL_NAME = "parley-presence";

export class TabPresence {
  constructor(client, { baseUrl = "", repeatMs = 30_000, clock = () => Date.now() } = {}) {
    this.client = client;
    this.base = baseUrl;
    this.repeatMs = repeatMs;
    this.clock = clock;
    this.tabId = client.tabId;
    this.tabs = new Map(); // tab id -> { status, at }
    this.status = "online";
    this.reported = null; // what the leader last sent
  }

  start() {
    if ("BroadcastChannel" in globalThis) {
      this.channel = new BroadcastChannel(CHANNEL_NAME);
      this.channel.onmessage = (message) => this.onMessage(message.data);
      this.channel.postMessage({ kind: "ask" });
    }
    this.client.addEventListener("status", (event) => {
      if (event.detail.state !== "connected") return;
      this.reported = null; // a new connection starts online on the server: say it again
      this.report(false);
    });
    globalThis.addEventListener?.("pagehide", () => this.stop());
    this.timer = setInterval(() => this.say(false), this.repeatMs);
  }

  stop() {
    clearInterval(this.timer);
    this.channel?.postMessage({ kind: "bye", tab: this.tabId });
    this.channel?.close();
    this.channel = null;
  }

  /** This tab's status; `force` sends it even if unchanged (a sign of activity, FR-035). */
  set(status, force = false) {
    this.status = status;
    this.say(force);
  }

  say(force) {
    this.tabs.set(this.tabId, { status: this.status, at: this.clock() });
    this.channel?.postMessage({ kind: "status", tab: this.tabId, status: this.status, force });
    this.report(force);
  }

  onMessage(data) {
    if (data?.kind === "status") {
      this.tabs.set(data.tab, { status: data.status, at: this.clock() });
      this.report(Boolean(data.force));
    } else if (data?.kind === "bye") {
      this.tabs.delete(data.tab);
      this.report(false);
    } else if (data?.kind === "ask") {
      this.channel?.postMessage({ kind: "status", tab: this.tabId, status: this.status, force: false });
    }
  }

  /** The browser's status: online while any tab heard from lately is. */
  aggregate() {
    const since = this.clock() - 3 * this.repeatMs;
    for (const [tab, { status, at }] of this.tabs) {
      if (tab !== this.tabId && at < since) this.tabs.delete(tab);
      else if (status === "online") return "online";
    }
    return "away";
  }

  report(force) {
    if (!this.client.isLeader) return;
    const status = this.aggregate();
    if (status === this.reported && !(force && status === "online")) return;
    this.reported = status;
    if (this.client.transport?.name === "ws" && this.client.send({ type: "presence", status })) return;
    fetch(`${this.base}/api/presence`, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ status }),
    }).catch(() => null);
  }
}
