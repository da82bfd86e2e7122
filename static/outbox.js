// outbox.js: posts that survive being offline, and a reload while offline (spec, Edge Cases).
//
//   import { Outbox } from "/static/outbox.js";      // also exported by /static/parley.js
//   const outbox = new Outbox();
//   outbox.addEventListener("change", (e) => e.detail); // one item, whenever its state changes
//   outbox.open(userId);                             // restores this user's unsent posts
//   outbox.post(discussionId, body, { stances });
//
// Each post gets a `client_id`; the server returns the first response for a repeated one (200,
// API.md), so a retry of a post that did reach the server never makes a second one. Unsent posts
// are kept in localStorage, one key per post (`parley.outbox.<user>.<client_id>`), written before
// the first try: a reload, a crash or a closed tab keeps them, and the next page of the same
// user on this browser sends them. localStorage rather than IndexedDB: it is synchronous, so
// nothing written is lost to a reload racing an asynchronous write, and a post is small.
// Other users' posts on a shared browser are never sent as this user (the key names the user).
//
// States: "sending" (queued or in flight), "sent", "failed" (after `failAfterMs` without success,
// kept for the writer's "Retry"; or refused by the server, then not kept past this page). Two
// tabs of one user may both restore a post and both send it: the server's dedupe by `client_id`
// stores it once.

const PREFIX = "parley.outbox.";
const MAX_STORED = 100; // per user; beyond, a post still goes out but would not survive a reload
const MAX_AGE_MS = 7 * 24 * 3600_000; // a post unsent for a week is dropped, not sent that late

export class Outbox extends EventTarget {
  constructor({ baseUrl = "", failAfterMs = 30000, retryEveryMs = 3000, storage = globalThis.localStorage } = {}) {
    super();
    this.base = baseUrl;
    this.failAfterMs = failAfterMs;
    this.storage = storage ?? null;
    this.owner = null;
    this.items = new Map();
    this.flushing = false;
    addEventListener("online", () => this.flush());
    this.timer = setInterval(() => this.flush(), retryEveryMs);
  }

  /** Whose posts these are; restores their unsent posts (each shows as a "change") and sends them. */
  open(owner) {
    this.owner = owner || null;
    for (const item of this.stored()) {
      if (this.items.has(item.clientId)) continue;
      this.items.set(item.clientId, { ...item, response: null });
      this.changed(item.clientId);
    }
    this.flush();
  }

  post(discussionId, body, extra = {}) {
    const clientId = crypto.randomUUID();
    const item = { clientId, discussionId, body, extra, state: "sending", since: Date.now(), response: null, error: null };
    this.items.set(clientId, item);
    this.save(item);
    this.changed(clientId);
    this.flush();
    return item;
  }

  retry(clientId) {
    const item = this.items.get(clientId);
    if (!item || item.state !== "failed") return;
    Object.assign(item, { state: "sending", since: Date.now(), error: null });
    this.save(item);
    this.changed(clientId);
    this.flush();
  }

  changed(clientId) {
    const item = this.items.get(clientId);
    if (item) this.dispatchEvent(new CustomEvent("change", { detail: item }));
  }

  async flush() {
    if (this.flushing) return;
    this.flushing = true;
    try {
      for (const item of [...this.items.values()]) {
        if (item.state !== "sending") continue;
        if (navigator.onLine) await this.send(item);
        if (item.state === "sending" && Date.now() - item.since > this.failAfterMs) {
          item.state = "failed";
          item.error = "Not sent: no connection";
          this.save(item);
          this.changed(item.clientId);
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  async send(item) {
    let response;
    try {
      response = await fetch(`${this.base}/api/discussions/${encodeURIComponent(item.discussionId)}/responses`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        credentials: "same-origin",
        body: JSON.stringify({ body: item.body, client_id: item.clientId, ...item.extra }),
      });
    } catch {
      return; // network: stays "sending"; the next flush retries
    }
    if (response.ok) {
      item.state = "sent";
      item.response = await response.json();
      this.forget(item);
      this.changed(item.clientId);
      this.items.delete(item.clientId);
    } else if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) {
      const body = await response.json().catch(() => ({}));
      item.state = "failed";
      item.error = body?.error?.message || `Refused (${response.status})`;
      this.forget(item); // refused, not lost: sending it again after a reload would fail again
      this.changed(item.clientId);
    }
  }

  // --- localStorage: one key per unsent post of the owner ----------------------------------

  key(clientId) {
    return `${PREFIX}${encodeURIComponent(this.owner ?? "")}.${clientId}`;
  }

  /** This owner's stored posts, oldest first. Unreadable entries are dropped. */
  stored() {
    if (!this.storage) return [];
    const mine = `${PREFIX}${encodeURIComponent(this.owner ?? "")}.`;
    const items = [];
    const stale = [];
    for (let i = 0; i < this.storage.length; i++) {
      const key = this.storage.key(i);
      if (!key?.startsWith(mine)) continue;
      let item = null;
      try { item = JSON.parse(this.storage.getItem(key)); } catch { /* corrupt: dropped below */ }
      if (item && typeof item.clientId === "string" && typeof item.body === "string" && Date.now() - item.since < MAX_AGE_MS) {
        items.push(item);
      } else {
        stale.push(key);
      }
    }
    for (const key of stale) this.storage.removeItem(key);
    return items.sort((a, b) => a.since - b.since);
  }

  save(item) {
    if (!this.storage) return;
    const { clientId, discussionId, body, extra, state, since, error } = item;
    try {
      if (!this.storage.getItem(this.key(clientId)) && this.stored().length >= MAX_STORED) return;
      this.storage.setItem(this.key(clientId), JSON.stringify({ clientId, discussionId, body, extra, state, since, error }));
    } catch { /* quota or privacy mode: the post still goes out from memory */ }
  }

  forget(item) {
    try { this.storage?.removeItem(this.key(item.clientId)); } catch { /* nothing to remove */ }
  }
}
