// Client beacons (issue 16, item 2): what only the page sees, reported to `POST /api/beacons`
// and counted there as `parley_client_*` metrics. A small ES module, no dependencies.
//
//   import { beacons } from "/static/beacons.js";
//   beacons.start();              // after sign-in: page_open, and manual_reload if it was one
//   beacons.watch(client);        // a ParleyClient: reconnections and the first live event
//   beacons.record("push_permission", { outcome: "granted" });
//
// Batched: kept in memory (at most MAX_QUEUED; the oldest go first) and sent every 30 s, when
// the page is hidden and when it goes away (`sendBeacon` survives the unload), never more
// often than MIN_GAP_MS except on the way out. The server refuses a whole batch for one bad
// entry, so only the kinds and bounds it knows are sent (app/api/beacons.py).

const ENDPOINT = "/api/beacons";
const MAX_QUEUED = 50; // the server's batch limit
const FLUSH_EVERY_MS = 30_000;
const MIN_GAP_MS = 5_000;
const MAX_SECONDS = 3600;
const MAX_ATTEMPTS = 1000;
// Set while the connection is lost; found on the next load, it makes a reload a manual one
// after a loss (SC-008). sessionStorage: this tab only, gone with it.
const LOST_KEY = "parley.connection-lost";

const LOST_STATES = new Set(["reconnecting", "offline", "failed"]);

function seconds(ms) {
  return Math.min(MAX_SECONDS, Math.max(0, Math.round(ms) / 1000));
}

function sendBatch(entries) {
  const body = JSON.stringify({ beacons: entries });
  try {
    // A JSON Blob: the server takes JSON bodies only; same-origin, so no preflight is needed.
    if (navigator.sendBeacon?.(ENDPOINT, new Blob([body], { type: "application/json" }))) return;
  } catch {
    /* some browsers refuse a non-"simple" Blob type in sendBeacon: fetch below */
  }
  fetch(ENDPOINT, {
    method: "POST",
    credentials: "same-origin",
    keepalive: true,
    headers: { "Content-Type": "application/json" },
    body,
  }).catch(() => null);
}

export class Beacons {
  constructor({ send = sendBatch, now = () => performance.now() } = {}) {
    this.queue = [];
    this.send = send;
    this.now = now;
    this.started = false;
    this.lastFlush = -Infinity;
  }

  record(kind, fields = {}) {
    if (this.queue.length >= MAX_QUEUED) this.queue.shift();
    this.queue.push({ kind, ...fields });
  }

  flush({ leaving = false } = {}) {
    if (!this.queue.length || (!leaving && this.now() - this.lastFlush < MIN_GAP_MS)) return;
    this.lastFlush = this.now();
    this.send(this.queue.splice(0, MAX_QUEUED));
  }

  // Once per page, when signed in (the endpoint needs the caller).
  start({ flushEveryMs = FLUSH_EVERY_MS } = {}) {
    if (this.started) return;
    this.started = true;
    this.record("page_open");
    if (sessionStorage.getItem(LOST_KEY)) {
      sessionStorage.removeItem(LOST_KEY);
      if (performance.getEntriesByType("navigation")[0]?.type === "reload") this.record("manual_reload");
    }
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "hidden") this.flush({ leaving: true });
    });
    addEventListener("pagehide", () => this.flush({ leaving: true }));
    setInterval(() => this.flush(), Math.max(100, flushEveryMs));
  }

  watch(client) {
    let connectedOnce = false;
    let lostAt = null;
    let attempts = 0;
    let firstEventSeen = false;
    client.addEventListener("status", ({ detail }) => {
      if (detail.state === "connected") {
        if (lostAt !== null) {
          this.record("reconnected", {
            seconds: seconds(this.now() - lostAt),
            attempts: Math.min(MAX_ATTEMPTS, Math.max(1, attempts)),
          });
        }
        sessionStorage.removeItem(LOST_KEY);
        connectedOnce = true;
        lostAt = null;
        attempts = 0;
        return;
      }
      if (!connectedOnce || !LOST_STATES.has(detail.state) || detail.reason === "signed_out") return;
      if (lostAt === null) {
        lostAt = this.now();
        sessionStorage.setItem(LOST_KEY, "1");
      }
      attempts = Math.max(attempts, detail.attempt || 0);
      if (detail.state === "failed") {
        this.record("reconnect_failed", { attempts: Math.min(MAX_ATTEMPTS, attempts) });
        connectedOnce = false; // one report per loss; a later success is not a reconnection in time
        lostAt = null;
      }
    });
    client.addEventListener("event", () => {
      if (firstEventSeen) return;
      firstEventSeen = true;
      this.record("first_event", { seconds: seconds(this.now()) });
    });
  }
}

export const beacons = new Beacons();
