// parley.js: Parley's real-time client, a dependency-free ES module.
//
//   import { ParleyClient, Outbox } from "/static/parley.js";
//   const client = new ParleyClient({ discussions: [id], cursor });   // cursor from GET .../responses
//   client.addEventListener("event", (e) => e.detail);                // one envelope (API.md)
//   client.addEventListener("status", (e) => e.detail);               // {state, transport, attempt, retryInMs}
//   client.addEventListener("sync", () => ...);                       // refetch over REST (sync_required)
//   client.start();
//
// Transport ladder (FR-026): EventSource first, upgraded to a WebSocket when one opens; long-poll
// when neither works (a proxy that buffers SSE or blocks upgrades). `transport: "sse"|"ws"|"poll"`
// forces one, for tests. Every transport resumes from the last cursor, and every tab dedupes by
// event id, so missed events arrive and none arrives twice.
//
// One connection per browser, not per tab (FR-036): tabs elect a leader with a Web Lock; the
// leader holds the connection for the union of the tabs' discussions and shares each event over
// a BroadcastChannel. When the leader tab closes, the lock passes to another tab, which resumes
// from its own cursor (it saw every shared event), so nothing is lost.
//
// Loss detection (FR-022): the browser's offline event, the WebSocket's heartbeat messages and any
// transport error. Reconnection (FR-024, FR-027): backoff 1, 2, 4, 8 ... 30 s with jitter, at most
// 10 tries, then state "failed" (the page offers Refresh). Coming back online retries at once.
// Page Visibility (FR-037): a hidden page stops the heartbeat watchdog; waking resumes and syncs.

// Every event type the server sends (app/events.py EVENT_TYPES; tests/test_page_events.py keeps the
// two lists equal): EventSource drops a named event that has no listener.
const EVENT_TYPES = [
  "response_posted", "response_edited", "response_deleted", "analysis_refreshing", "analysis_updated",
  "typing_started", "typing_stopped", "user_joined", "user_left", "presence_changed", "notification",
  "notification_read", "activity", "broadcast", "sync_required", "auth_expired", "session_idle",
  "proposition_added", "access_granted", "access_revoked",
];
const CONTROL_TYPES = new Set(["hello", "heartbeat", "pong", "subscribed", "unsubscribed", "auth_ok", "error"]);
const LOCK_NAME = "parley-connection";
const CHANNEL_NAME = "parley";
const OPEN_TIMEOUT_MS = 5000;
const POLL_TIMEOUT_S = 25;
const POLL_GRACE_S = 10;
const SEEN_LIMIT = 5000;
const SLEEP_GAP_MS = 10000;

export const STATE = Object.freeze({
  CONNECTING: "connecting",
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
  OFFLINE: "offline",
  FAILED: "failed",
});

/** Compare cursors `<epoch>.<ms>-<seq>`; cursors of different epochs compare equal (unordered). */
export function compareCursors(a, b) {
  const pa = parseCursor(a), pb = parseCursor(b);
  if (!pa || !pb || pa.epoch !== pb.epoch) return 0;
  return pa.ms - pb.ms || pa.seq - pb.seq;
}

/** The older of two cursors (either may be null): where a replay must start to miss nothing. */
function older(a, b) {
  if (!a) return b;
  if (!b) return a;
  return compareCursors(a, b) < 0 ? a : b;
}

function parseCursor(text) {
  const match = /^([A-Za-z0-9_]+)\.(\d+)-(\d+)$/.exec(text || "");
  return match ? { epoch: match[1], ms: Number(match[2]), seq: Number(match[3]) } : null;
}

/** Remembers the last `limit` keys; enough to dedupe overlapping transports and replays. */
class RecentSet {
  constructor(limit) { this.limit = limit; this.set = new Set(); }
  has(key) { return this.set.has(key); }
  add(key) {
    this.set.add(key);
    if (this.set.size > this.limit) this.set.delete(this.set.values().next().value);
  }
}

function query(discussions, extra) {
  const params = new URLSearchParams();
  for (const id of discussions) params.append("discussion", id);
  for (const [key, value] of Object.entries(extra)) if (value != null && value !== "") params.set(key, value);
  return params.toString();
}

// ---------------------------------------------------------------------------------------------
// Transports. Each one: `open()` resolves once it is usable and rejects if it never becomes so;
// after that it reports `onEvents(envelopes)`, `onLost(reason)` once, and `close()` is idempotent.

class SseTransport {
  name = "sse";
  constructor(base, discussions, cursor, handlers) {
    this.url = `${base}/stream?${query(discussions, { last_event_id: cursor })}`;
    this.handlers = handlers;
    this.closed = false;
  }
  open() {
    return new Promise((resolve, reject) => {
      const source = (this.source = new EventSource(this.url));
      let opened = false;
      const timer = setTimeout(() => { if (!opened) { this.close(); reject(new Error("sse: open timed out")); } }, OPEN_TIMEOUT_MS);
      source.onopen = () => { opened = true; clearTimeout(timer); resolve(); };
      // EventSource would retry by itself with its own delays; the client owns reconnection.
      source.onerror = () => {
        clearTimeout(timer);
        const wasOpen = opened;
        this.close();
        if (wasOpen) this.handlers.onLost("sse_error");
        else reject(new Error("sse: could not open"));
      };
      const deliver = (event) => this.handlers.onEvents([JSON.parse(event.data)]);
      for (const type of EVENT_TYPES) source.addEventListener(type, deliver);
    });
  }
  send() { return false; }
  close() { if (!this.closed) { this.closed = true; this.source?.close(); } }
}

class WebSocketTransport {
  name = "ws";
  constructor(base, discussions, cursor, handlers) {
    const origin = new URL(base || location.origin, location.href);
    const scheme = origin.protocol === "https:" ? "wss:" : "ws:";
    this.url = `${scheme}//${origin.host}/ws?${query(discussions, { last_event_id: cursor })}`;
    this.handlers = handlers;
    this.closed = false;
    this.heartbeatMs = 30000;
    this.watchdog = null;
    this.paused = false;
  }
  open() {
    return new Promise((resolve, reject) => {
      let opened = false;
      const socket = (this.socket = new WebSocket(this.url));
      const timer = setTimeout(() => { if (!opened) { this.close(); reject(new Error("ws: open timed out")); } }, OPEN_TIMEOUT_MS);
      socket.onmessage = (message) => {
        let data;
        try { data = JSON.parse(message.data); } catch { return; }
        this.kick();
        if (data.type === "hello") {
          this.heartbeatMs = Math.max(100, data.heartbeat_s * 1000);
          opened = true;
          clearTimeout(timer);
          this.kick();
          resolve();
        } else if (CONTROL_TYPES.has(data.type)) {
          this.handlers.onControl?.(data);
        } else {
          this.handlers.onEvents([data]);
        }
      };
      socket.onclose = (event) => {
        clearTimeout(timer);
        const wasOpen = opened && !this.closed;
        this.close();
        if (wasOpen) this.handlers.onLost(event.code === 4001 ? "auth_expired" : "ws_closed");
        else if (!opened) reject(new Error(`ws: closed before hello (${event.code})`));
      };
    });
  }
  /** Restart the watchdog: a socket silent for two heartbeats and a bit is dead. */
  kick() {
    clearTimeout(this.watchdog);
    if (this.closed || this.paused) return;
    this.watchdog = setTimeout(() => {
      const wasOpen = !this.closed;
      this.close();
      if (wasOpen) this.handlers.onLost("heartbeat_missed");
    }, this.heartbeatMs * 2 + 2000);
  }
  pause(paused) { this.paused = paused; if (paused) clearTimeout(this.watchdog); else this.kick(); }
  send(message) {
    if (this.closed || this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }
  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.watchdog);
    try { this.socket?.close(1000); } catch { /* already closing */ }
  }
}

class PollTransport {
  name = "poll";
  constructor(base, discussions, cursor, handlers) {
    this.base = base;
    this.discussions = discussions;
    this.cursor = cursor;
    this.handlers = handlers;
    this.closed = false;
    this.abort = new AbortController();
  }
  async fetchOnce(timeoutS) {
    const url = `${this.base}/poll?${query(this.discussions, { cursor: this.cursor, timeout: timeoutS })}`;
    // A half-open connection would leave a poll hanging for good: give up well after the
    // server's own timeout, and count that as a lost connection.
    const signal = AbortSignal.any
      ? AbortSignal.any([this.abort.signal, AbortSignal.timeout((timeoutS + POLL_GRACE_S) * 1000)])
      : this.abort.signal;
    const response = await fetch(url, { signal, cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error(`poll: ${response.status}`);
    const body = await response.json();
    if (body.events.length) this.handlers.onEvents(body.events);
    this.cursor = body.cursor;
    this.handlers.onCursor?.(body.cursor);
  }
  async open() {
    await this.fetchOnce(0);
    this.loop();
  }
  async loop() {
    while (!this.closed) {
      try {
        await this.fetchOnce(POLL_TIMEOUT_S);
      } catch (error) {
        if (this.closed) return;
        this.close();
        this.handlers.onLost("poll_failed");
        return;
      }
    }
  }
  send() { return false; }
  close() { if (!this.closed) { this.closed = true; this.abort.abort(); } }
}

const TRANSPORTS = { sse: SseTransport, ws: WebSocketTransport, poll: PollTransport };

// ---------------------------------------------------------------------------------------------

export class ParleyClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string[]} [options.discussions] discussions this tab shows
   * @param {string|null} [options.cursor] where this tab stands: the `cursor` of GET .../responses
   * @param {"auto"|"sse"|"ws"|"poll"} [options.transport]
   * @param {boolean} [options.shareAcrossTabs] elect one leader tab per browser (default true)
   * @param {number} [options.backoffBaseMs] first reconnection delay (1000); doubles up to backoffMaxMs
   */
  constructor({
    discussions = [], cursor = null, transport = "auto", baseUrl = "", shareAcrossTabs = true,
    backoffBaseMs = 1000, backoffMaxMs = 30000, maxAttempts = 10,
  } = {}) {
    super();
    this.discussions = new Set(discussions);
    this.cursor = cursor;
    this.forced = transport === "auto" ? null : transport;
    this.base = baseUrl;
    this.backoffBaseMs = backoffBaseMs;
    this.backoffMaxMs = backoffMaxMs;
    this.maxAttempts = maxAttempts;
    this.tabId = Math.random().toString(36).slice(2);
    this.seen = new RecentSet(SEEN_LIMIT);
    this.status = { state: STATE.CONNECTING, transport: null, attempt: 0, retryInMs: null };
    this.isLeader = false;
    this.transport = null;
    this.upgrade = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.generation = 0; // bumps on every (re)connect; stale callbacks compare and bail
    this.wanted = new Map(); // leader: tab id -> discussions that tab shows
    this.shared = shareAcrossTabs && "locks" in navigator && "BroadcastChannel" in window;
    this.listeners = [];
  }

  start() {
    this.on(window, "online", () => this.onOnline());
    this.on(window, "offline", () => this.onOffline());
    this.on(document, "visibilitychange", () => this.onVisibility());
    this.on(window, "pagehide", () => this.stop());
    this.lastTick = Date.now();
    // Timers stop while the device sleeps: a long gap between ticks means we just woke up.
    this.ticker = setInterval(() => {
      const now = Date.now();
      if (now - this.lastTick > SLEEP_GAP_MS) this.onWake();
      this.lastTick = now;
    }, 2000);
    if (!navigator.onLine) this.setStatus({ state: STATE.OFFLINE, transport: null });
    if (!this.shared) {
      this.becomeLeader();
      return;
    }
    this.channel = new BroadcastChannel(CHANNEL_NAME);
    this.channel.onmessage = (message) => this.onChannel(message.data);
    this.channel.postMessage({ kind: "want", tab: this.tabId, discussions: [...this.discussions], cursor: this.cursor });
    navigator.locks.request(LOCK_NAME, () => new Promise((release) => {
      this.releaseLock = release;
      if (this.stopped) release();
      else this.becomeLeader();
    }));
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    this.generation++;
    clearTimeout(this.retryTimer);
    clearInterval(this.ticker);
    this.closeTransports();
    for (const [target, type, fn] of this.listeners) target.removeEventListener(type, fn);
    this.channel?.postMessage({ kind: "bye", tab: this.tabId });
    this.channel?.close();
    this.releaseLock?.();
  }

  on(target, type, fn) {
    target.addEventListener(type, fn);
    this.listeners.push([target, type, fn]);
  }

  /** Show one more discussion in this tab, from `cursor` (its REST read's cursor). */
  watch(discussionId, cursor) {
    if (this.discussions.has(discussionId)) return;
    this.discussions.add(discussionId);
    if (this.isLeader) this.want(this.tabId, [discussionId], cursor);
    else this.channel?.postMessage({ kind: "want", tab: this.tabId, discussions: [discussionId], cursor });
  }

  /** A WebSocket message (typing, presence); false when the connection cannot carry it. */
  send(message) {
    if (this.isLeader) return this.transport?.send(message) ?? false;
    this.channel?.postMessage({ kind: "send", message });
    return true;
  }

  /** Refresh the token in place on a WebSocket (API.md, Identity); SSE and long-poll pick up
   * a new cookie on their next request instead. */
  authenticate(token) {
    return this.send({ type: "auth", token });
  }

  /** After the last try failed: try again now, from the start of the backoff. */
  retryNow() {
    this.attempt = 0;
    if (this.isLeader) this.connect();
    else this.channel?.postMessage({ kind: "retry" });
  }

  // --- events shared by every tab ------------------------------------------------------------

  deliver(envelopes) {
    const fresh = [];
    for (const envelope of envelopes) {
      if (envelope.id) {
        if (this.seen.has(envelope.id)) continue;
        this.seen.add(envelope.id);
        // sync_required moves the cursor to the head even across epochs (a restarted server).
        if (envelope.type === "sync_required" || compareCursors(envelope.id, this.cursor) > 0 || !this.cursor) {
          this.cursor = envelope.id;
        }
      }
      fresh.push(envelope);
    }
    for (const envelope of fresh) {
      if (envelope.type === "sync_required") this.dispatchEvent(new CustomEvent("sync", { detail: envelope }));
      this.dispatchEvent(new CustomEvent("event", { detail: envelope }));
    }
    return fresh;
  }

  setStatus(status) {
    this.status = { ...this.status, attempt: 0, retryInMs: null, ...status };
    this.dispatchEvent(new CustomEvent("status", { detail: this.status }));
    if (this.isLeader) this.channel?.postMessage({ kind: "status", status: this.status });
  }

  onChannel(data) {
    switch (data.kind) {
      case "events":
        if (!this.isLeader) this.deliver(data.events);
        break;
      case "status":
        if (!this.isLeader && navigator.onLine) this.setStatus(data.status);
        break;
      case "want":
        if (this.isLeader) {
          this.want(data.tab, data.discussions, data.cursor);
          this.channel.postMessage({ kind: "status", status: this.status }); // a new tab learns it
        }
        break;
      case "leader":
        if (!this.isLeader) {
          this.channel.postMessage({ kind: "want", tab: this.tabId, discussions: [...this.discussions], cursor: this.cursor });
        }
        break;
      case "bye":
        this.wanted.delete(data.tab);
        break;
      case "send":
        if (this.isLeader) this.transport?.send(data.message);
        break;
      case "retry":
        if (this.isLeader) this.retryNow();
        break;
    }
  }

  // --- the leader: holds the one connection ----------------------------------------------------

  becomeLeader() {
    this.isLeader = true;
    this.wanted.set(this.tabId, new Set(this.discussions));
    this.channel?.postMessage({ kind: "leader", tab: this.tabId });
    if (navigator.onLine) this.connect();
    else this.setStatus({ state: STATE.OFFLINE, transport: null });
  }

  allDiscussions() {
    const all = new Set(this.discussions);
    for (const ids of this.wanted.values()) for (const id of ids) all.add(id);
    return [...all];
  }

  want(tab, discussions, cursor) {
    const known = new Set(this.allDiscussions());
    const mine = this.wanted.get(tab) ?? new Set();
    for (const id of discussions) mine.add(id);
    this.wanted.set(tab, mine);
    const added = discussions.filter((id) => !known.has(id));
    if (!added.length) return;
    // Replay from the older of the two cursors so the newcomer misses nothing since its REST
    // read; everything this tab already has is dropped again by event id.
    const from = older(cursor, this.cursor);
    if (!this.transport) {
      this.pendingFrom = older(this.pendingFrom, from); // the next connect starts there
      return;
    }
    if (this.transport.name === "ws") {
      for (const id of added) this.transport.send({ type: "subscribe", discussion_id: id });
      if (from) this.transport.send({ type: "resume", last_event_id: from });
    } else {
      this.connect(from);
    }
  }

  handlers(generation) {
    const live = () => generation === this.generation;
    return {
      onEvents: (envelopes) => {
        if (!live()) return;
        const fresh = this.deliver(envelopes);
        if (fresh.length) this.channel?.postMessage({ kind: "events", events: fresh });
        // The stream ends after this; retrying with the same expired cookie cannot work.
        if (envelopes.some((envelope) => envelope.type === "auth_expired")) this.lost("auth_expired");
      },
      onLost: (reason) => { if (live()) this.lost(reason); },
      onCursor: (cursor) => { if (live() && cursor && !this.cursor) this.cursor = cursor; },
    };
  }

  closeTransports() {
    this.transport?.close();
    this.upgrade?.close();
    this.transport = this.upgrade = null;
  }

  /** One try of the ladder. Resolves when a transport works, or schedules the next try. */
  async connect(from = older(this.cursor, this.pendingFrom)) {
    this.pendingFrom = null;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.closeTransports();
    const generation = ++this.generation;
    if (this.status.state !== STATE.RECONNECTING) this.setStatus({ state: STATE.CONNECTING, transport: null });
    const order = this.forced ? [this.forced] : ["sse", "ws", "poll"];
    for (const name of order) {
      const transport = new TRANSPORTS[name](this.base, this.allDiscussions(), from, this.handlers(generation));
      try {
        await transport.open();
      } catch {
        transport.close();
        if (generation !== this.generation) return;
        continue;
      }
      if (generation !== this.generation) { transport.close(); return; }
      this.transport = transport;
      this.attempt = 0;
      this.setStatus({ state: STATE.CONNECTED, transport: name });
      if (name === "sse" && !this.forced) this.tryUpgrade(generation);
      if (document.hidden) transport.pause?.(true);
      return;
    }
    this.lost("no_transport");
  }

  /** SSE works; move to a WebSocket if one opens. Events seen on both are dropped by id. */
  async tryUpgrade(generation) {
    const socket = new WebSocketTransport(this.base, this.allDiscussions(), this.cursor, this.handlers(generation));
    this.upgrade = socket;
    try {
      await socket.open();
    } catch {
      if (this.upgrade === socket) this.upgrade = null;
      return; // stay on SSE
    }
    if (generation !== this.generation || this.upgrade !== socket) { socket.close(); return; }
    this.upgrade = null;
    this.transport?.close();
    this.transport = socket;
    this.setStatus({ state: STATE.CONNECTED, transport: "ws" });
    if (document.hidden) socket.pause(true);
  }

  lost(reason) {
    this.generation++;
    this.closeTransports();
    if (this.stopped) return;
    if (reason === "auth_expired") {
      this.setStatus({ state: STATE.FAILED, transport: null, reason });
      return;
    }
    if (!navigator.onLine) {
      this.setStatus({ state: STATE.OFFLINE, transport: null });
      return; // the online event reconnects
    }
    this.attempt += 1;
    if (this.attempt > this.maxAttempts) {
      this.setStatus({ state: STATE.FAILED, transport: null, reason, attempt: this.maxAttempts });
      return;
    }
    const exponential = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** (this.attempt - 1));
    const delay = Math.round(exponential * (0.8 + Math.random() * 0.4)); // jitter: spread a herd
    this.setStatus({ state: STATE.RECONNECTING, transport: null, attempt: this.attempt, retryInMs: delay, reason });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  onOffline() {
    // Chromium keeps some sockets open while offline; drop them now rather than wait for a
    // heartbeat, so the page says "reconnecting" at once (FR-022).
    if (this.isLeader) {
      this.generation++;
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.closeTransports();
    }
    this.setStatus({ state: STATE.OFFLINE, transport: null });
  }

  onOnline() {
    if (!this.isLeader) return;
    this.attempt = 0;
    this.setStatus({ state: STATE.RECONNECTING, transport: null, attempt: 1, retryInMs: 0 });
    this.connect();
  }

  onVisibility() {
    if (!this.isLeader) return;
    this.transport?.pause?.(document.hidden);
    // Presence (away while hidden) is the page's, for all its tabs at once: static/tab_presence.js.
    // Back in view: catch up whatever a throttled background tab may have missed. (A dead
    // connection has already scheduled its own retry; nothing else to do here.)
    if (!document.hidden && this.transport?.name === "ws" && this.cursor) {
      this.transport.send({ type: "resume", last_event_id: this.cursor });
    }
  }

  /** After the device slept: make sure the connection is alive and caught up (FR-037). */
  onWake() {
    if (!this.isLeader || !navigator.onLine) return;
    if (!this.transport) {
      if (this.status.state !== STATE.FAILED) { this.attempt = 0; this.connect(); }
    } else if (this.transport.name === "ws" && this.cursor) {
      this.transport.send({ type: "resume", last_event_id: this.cursor });
    } else if (this.transport.name === "sse") {
      this.connect(); // an EventSource asleep may be half-open; reopening resumes from the cursor
    }
  }
}

// ---------------------------------------------------------------------------------------------

// Posts that survive being offline and a reload: static/outbox.js (issue 14).
export { Outbox } from "./outbox.js";
