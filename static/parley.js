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
// Loss detection (FR-022): the browser's offline event, any transport error, and a deadline per
// transport: SSE (asked for `heartbeat=event`, since EventSource cannot see `:` comments) and
// WebSocket both hear from the server at least every `heartbeat_s` (their `hello` says how often);
// nothing for heartbeat_s + heartbeatGraceMs (3 s) means the connection silently died (a dead
// Wi-Fi, a NAT that forgot the flow: no close, no `offline`), so it is closed and resumed.
// A buffering proxy (FR-026) lets the SSE response "open" and then holds every byte: SSE counts as
// open only once its first event (`hello`) arrives, within firstEventTimeoutMs (5 s), else the
// ladder moves on to WebSocket, then long-poll.
// Reconnection (FR-024, FR-027): backoff 1, 2, 4, 8 ... 30 s with jitter, at most
// 10 tries, then state "failed" (the page offers Refresh). Coming back online retries at once.
// Page Visibility (FR-037): a hidden page stops the heartbeat watchdog; waking resumes and syncs.
// Idle (FR-035): after the server's `session_idle` the client stays closed in state "paused" and
// reconnects, from its cursor, only when the person acts (click, key, focus, the tab shown).
// Tokens (NFR-013): with a `refreshToken` callback the client renews the token shortly before it
// expires (the server's `hello` says when) and after `auth_expired`, then resumes on the new token
// with no "failed" state; `signOut()` closes the streams of every tab of this browser.

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
const HEARTBEAT_GRACE_MS = 3000;
const AUTH_CHANNEL_NAME = "parley-auth";
const REFRESH_MARGIN_MS = 60000; // renew this long before expiry (a fifth of the life, if shorter)
const ACTIVITY_EVENTS = ["click", "keydown", "focus"];
const POLL_TIMEOUT_S = 25;
const POLL_GRACE_S = 10;
const SEEN_LIMIT = 5000;
const SLEEP_GAP_MS = 10000;

export const STATE = Object.freeze({
  CONNECTING: "connecting",
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
  OFFLINE: "offline",
  PAUSED: "paused", // closed by the server for inactivity (FR-035); any user activity resumes
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
// `options`: {firstEventTimeoutMs, heartbeatGraceMs}.

/** FR-022: a connection must hear from the server within `ms` of the last thing it heard, else
 * `onMissed` (a silent drop). Paused while the page is hidden (FR-037: no wake-ups for nothing). */
class Deadline {
  constructor(onMissed) { this.onMissed = onMissed; this.ms = null; this.timer = null; this.paused = false; }
  arm(ms) { this.ms = ms; this.kick(); }
  kick() {
    clearTimeout(this.timer);
    if (this.ms !== null && !this.paused) this.timer = setTimeout(this.onMissed, this.ms);
  }
  pause(paused) { this.paused = paused; if (paused) clearTimeout(this.timer); else this.kick(); }
  stop() { this.ms = null; clearTimeout(this.timer); }
}

class SseTransport {
  name = "sse";
  constructor(base, discussions, cursor, handlers, options) {
    // heartbeat=event: a `hello` first and `heartbeat` events, which EventSource can see.
    this.url = `${base}/stream?${query(discussions, { last_event_id: cursor, heartbeat: "event" })}`;
    this.handlers = handlers;
    this.options = options;
    this.closed = false;
    this.deadline = new Deadline(() => this.missed());
  }
  open() {
    return new Promise((resolve, reject) => {
      const source = (this.source = new EventSource(this.url));
      let opened = false;
      // `onopen` proves little: a buffering proxy passes the headers, then holds every event. Open
      // means the first event (`hello`, sent at once) arrived.
      const timer = setTimeout(() => {
        if (!opened) { this.close(); reject(new Error("sse: no first event in time")); }
      }, this.options.firstEventTimeoutMs);
      source.addEventListener("hello", (event) => {
        if (opened) return;
        const hello = JSON.parse(event.data);
        opened = true;
        clearTimeout(timer);
        this.deadline.arm(hello.heartbeat_s * 1000 + this.options.heartbeatGraceMs);
        this.handlers.onHello?.(hello);
        resolve();
      });
      source.addEventListener("heartbeat", () => this.deadline.kick());
      // EventSource would retry by itself with its own delays; the client owns reconnection.
      source.onerror = () => {
        clearTimeout(timer);
        const wasOpen = opened && !this.closed;
        this.close();
        if (wasOpen) this.handlers.onLost("sse_error");
        else if (!opened) reject(new Error("sse: could not open"));
      };
      const deliver = (event) => {
        this.deadline.kick();
        this.handlers.onEvents([JSON.parse(event.data)]);
      };
      for (const type of EVENT_TYPES) source.addEventListener(type, deliver);
    });
  }
  missed() {
    const wasOpen = !this.closed;
    this.close();
    if (wasOpen) this.handlers.onLost("heartbeat_missed");
  }
  pause(paused) { this.deadline.pause(paused); }
  send() { return false; }
  close() {
    if (this.closed) return;
    this.closed = true;
    this.deadline.stop();
    this.source?.close();
  }
}

class WebSocketTransport {
  name = "ws";
  constructor(base, discussions, cursor, handlers, options) {
    const origin = new URL(base || location.origin, location.href);
    const scheme = origin.protocol === "https:" ? "wss:" : "ws:";
    this.url = `${scheme}//${origin.host}/ws?${query(discussions, { last_event_id: cursor })}`;
    this.handlers = handlers;
    this.options = options;
    this.closed = false;
    this.deadline = new Deadline(() => this.missed());
  }
  open() {
    return new Promise((resolve, reject) => {
      let opened = false;
      const socket = (this.socket = new WebSocket(this.url));
      const timer = setTimeout(() => {
        if (!opened) { this.close(); reject(new Error("ws: open timed out")); }
      }, this.options.firstEventTimeoutMs);
      socket.onmessage = (message) => {
        let data;
        try { data = JSON.parse(message.data); } catch { return; }
        this.deadline.kick();
        if (data.type === "hello") {
          // The server sends something at least every heartbeat_s (a `heartbeat` when idle).
          this.deadline.arm(data.heartbeat_s * 1000 + this.options.heartbeatGraceMs);
          opened = true;
          clearTimeout(timer);
          this.handlers.onHello?.(data);
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
  missed() {
    const wasOpen = !this.closed;
    this.close();
    if (wasOpen) this.handlers.onLost("heartbeat_missed");
  }
  pause(paused) { this.deadline.pause(paused); }
  send(message) {
    if (this.closed || this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }
  close() {
    if (this.closed) return;
    this.closed = true;
    this.deadline.stop();
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
    if (!response.ok) throw Object.assign(new Error(`poll: ${response.status}`), { status: response.status });
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
        // The cookie expired between two polls: the same as `auth_expired` on a stream.
        this.handlers.onLost(error.status === 401 ? "auth_expired" : "poll_failed");
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
   * @param {number} [options.heartbeatGraceMs] silence past the server's heartbeat_s that counts as a drop (3000)
   * @param {number} [options.firstEventTimeoutMs] how long a new connection may take to say hello (5000)
   * @param {() => Promise<string|boolean|null>} [options.refreshToken] renews the token (and the
   *   `parley_token` cookie) before it expires: resolves to the new JWT (or true when only the cookie
   *   changed), null or a rejection when the person must sign in again
   */
  constructor({
    discussions = [], cursor = null, transport = "auto", baseUrl = "", shareAcrossTabs = true,
    backoffBaseMs = 1000, backoffMaxMs = 30000, maxAttempts = 10,
    heartbeatGraceMs = HEARTBEAT_GRACE_MS, firstEventTimeoutMs = OPEN_TIMEOUT_MS, refreshToken = null,
  } = {}) {
    super();
    this.discussions = new Set(discussions);
    this.cursor = cursor;
    this.forced = transport === "auto" ? null : transport;
    this.base = baseUrl;
    this.backoffBaseMs = backoffBaseMs;
    this.backoffMaxMs = backoffMaxMs;
    this.maxAttempts = maxAttempts;
    this.transportOptions = { heartbeatGraceMs, firstEventTimeoutMs };
    this.refreshToken = refreshToken;
    this.refreshTimer = null;
    this.refreshing = null; // the refresh in flight, if any
    this.signedOut = false;
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
    for (const type of ACTIVITY_EVENTS) this.on(window, type, () => this.onActivity(), true);
    if ("BroadcastChannel" in window) {
      this.authChannel = new BroadcastChannel(AUTH_CHANNEL_NAME);
      this.authChannel.onmessage = (message) => { if (message.data?.kind === "signed_out") this.onSignedOut(); };
    }
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
    clearTimeout(this.refreshTimer);
    clearInterval(this.ticker);
    this.closeTransports();
    this.authChannel?.close();
    for (const [target, type, fn, capture] of this.listeners) target.removeEventListener(type, fn, capture);
    this.channel?.postMessage({ kind: "bye", tab: this.tabId });
    this.channel?.close();
    this.releaseLock?.();
  }

  on(target, type, fn, capture = false) {
    target.addEventListener(type, fn, capture);
    this.listeners.push([target, type, fn, capture]);
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
    if (this.signedOut) return;
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
    if (this.signedOut) return;
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
        // Closed for inactivity: reconnecting now would only reset the server's idle clock.
        else if (envelopes.some((envelope) => envelope.type === "session_idle")) this.pauseIdle();
      },
      onLost: (reason) => { if (live()) this.lost(reason); },
      onHello: (hello) => { if (live() && hello.expires_in_s != null) this.scheduleRefresh(hello.expires_in_s * 1000); },
      onCursor: (cursor) => { if (live() && cursor && !this.cursor) this.cursor = cursor; },
      onControl: (control) => {
        if (live() && control.type === "auth_ok" && control.expires_in_s != null) {
          this.scheduleRefresh(control.expires_in_s * 1000);
        }
      },
    };
  }

  closeTransports() {
    this.transport?.close();
    this.upgrade?.close();
    this.transport = this.upgrade = null;
  }

  /** One try of the ladder. Resolves when a transport works, or schedules the next try.
   * `quiet`: a planned reconnect (a renewed token) that keeps showing the current state. */
  async connect(from = older(this.cursor, this.pendingFrom), { quiet = false } = {}) {
    if (this.signedOut) return;
    this.pendingFrom = null;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.closeTransports();
    const generation = ++this.generation;
    if (this.status.state !== STATE.RECONNECTING && !quiet) this.setStatus({ state: STATE.CONNECTING, transport: null });
    const order = this.forced ? [this.forced] : ["sse", "ws", "poll"];
    for (const name of order) {
      const transport = new TRANSPORTS[name](
        this.base, this.allDiscussions(), from, this.handlers(generation), this.transportOptions,
      );
      try {
        await transport.open();
      } catch (error) {
        transport.close();
        if (generation !== this.generation) return;
        if (error?.status === 401) { this.lost("auth_expired"); return; } // the cookie expired meanwhile
        continue;
      }
      if (generation !== this.generation) { transport.close(); return; }
      this.transport = transport;
      this.attempt = 0;
      this.renewals = 0;
      this.setStatus({ state: STATE.CONNECTED, transport: name });
      if (name === "sse" && !this.forced) this.tryUpgrade(generation);
      if (document.hidden) transport.pause?.(true);
      return;
    }
    this.lost("no_transport");
  }

  /** SSE works; move to a WebSocket if one opens. Events seen on both are dropped by id. */
  async tryUpgrade(generation) {
    const socket = new WebSocketTransport(
      this.base, this.allDiscussions(), this.cursor, this.handlers(generation), this.transportOptions,
    );
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
    if (this.stopped || this.signedOut) return;
    if (reason === "auth_expired") {
      this.renewAfterExpiry();
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
    if (this.status.state === STATE.PAUSED || this.signedOut) return; // stays closed either way
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
    if (!this.isLeader || this.status.state === STATE.PAUSED || this.signedOut) return;
    this.attempt = 0;
    this.setStatus({ state: STATE.RECONNECTING, transport: null, attempt: 1, retryInMs: 0 });
    this.connect();
  }

  onVisibility() {
    if (!document.hidden) this.onActivity(); // the person is back: resume a paused connection
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
      if (![STATE.FAILED, STATE.PAUSED].includes(this.status.state)) { this.attempt = 0; this.connect(); }
    } else if (this.transport.name === "ws" && this.cursor) {
      this.transport.send({ type: "resume", last_event_id: this.cursor });
    } else if (this.transport.name === "sse") {
      this.connect(); // an EventSource asleep may be half-open; reopening resumes from the cursor
    }
  }

  // --- idle (FR-035) ---------------------------------------------------------------------------

  /** The server closed this connection for inactivity: stay closed, calmly, until the person acts. */
  pauseIdle() {
    this.generation++;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.closeTransports();
    this.attempt = 0;
    this.setStatus({ state: STATE.PAUSED, transport: null, reason: "idle" });
  }

  /** A click, a key, focus, the tab shown: a paused connection resumes from its cursor. */
  onActivity() {
    if (this.status.state !== STATE.PAUSED || this.stopped || this.signedOut) return;
    if (this.isLeader) {
      this.attempt = 0;
      this.connect();
    } else {
      this.channel?.postMessage({ kind: "retry" }); // the leader holds the connection
    }
  }

  // --- tokens (NFR-013) ------------------------------------------------------------------------

  /** The token expires in `ms`: renew it a minute before (a fifth of its life, if shorter). */
  scheduleRefresh(ms) {
    clearTimeout(this.refreshTimer);
    if (!this.refreshToken) return;
    const delay = Math.max(0, ms - Math.min(REFRESH_MARGIN_MS, ms / 5));
    this.refreshTimer = setTimeout(() => this.refreshBeforeExpiry(), delay);
  }

  /** The new token (or true), or null when it could not be had. One refresh at a time. */
  renewToken() {
    if (!this.refreshToken) return Promise.resolve(null);
    this.refreshing ??= (async () => {
      try {
        return (await this.refreshToken()) || null;
      } catch {
        return null;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  async refreshBeforeExpiry() {
    if (!this.isLeader || this.stopped || this.signedOut) return;
    const token = await this.renewToken();
    if (!token || !this.transport || this.stopped) return; // on failure the old token runs out: auth_expired
    if (this.transport.name === "ws" && typeof token === "string") {
      this.transport.send({ type: "auth", token }); // in place; `auth_ok` schedules the next refresh
    } else if (this.transport.name !== "poll") {
      // A stream keeps the cookie it opened with: reopen on the new one, from the cursor.
      this.connect(undefined, { quiet: true });
    } // long-poll sends the new cookie with its next request
  }

  /** `auth_expired` (or a 401): renew, then reconnect from the cursor as if nothing happened.
   * Without a callback, or when it fails, the person must sign in again: "failed". */
  async renewAfterExpiry() {
    const generation = this.generation;
    // A callback whose tokens the server keeps refusing must not spin: twice without a
    // connection in between is enough.
    this.renewals = (this.renewals || 0) + 1;
    const token = this.renewals <= 2 ? await this.renewToken() : null;
    if (generation !== this.generation || this.stopped || this.signedOut) return;
    if (token) this.connect(undefined, { quiet: true });
    else this.setStatus({ state: STATE.FAILED, transport: null, reason: "auth_expired" });
  }

  /** Sign-out: close this tab's connection and every other tab's (they may not go on streaming
   * on a cookie that is about to be cleared). Call before clearing the session. */
  signOut() {
    this.authChannel?.postMessage({ kind: "signed_out" });
    this.onSignedOut();
  }

  onSignedOut() {
    if (this.signedOut) return;
    this.signedOut = true;
    this.generation++;
    clearTimeout(this.retryTimer);
    clearTimeout(this.refreshTimer);
    this.closeTransports();
    this.setStatus({ state: STATE.FAILED, transport: null, reason: "signed_out" });
  }
}

// ---------------------------------------------------------------------------------------------

// Posts that survive being offline and a reload: static/outbox.js (issue 14).
export { Outbox } from "./outbox.js";
