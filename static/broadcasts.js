// Platform broadcasts as banners at the top of the page (FR-032): a dependency-free ES module.
//
//   import { Broadcasts } from "/static/broadcasts.js";
//   const broadcasts = new Broadcasts(document.querySelector("#broadcasts"));
//   broadcasts.load();                       // GET /api/broadcasts: the active ones, on page load
//   broadcasts.receive(envelope);            // every `broadcast` event from the stream
//
// A broadcast is `{id, message, level: "info"|"warning"|"critical", created_at, expires_at}`.
// Each one is shown once per browser: it is remembered as seen (localStorage) when it is
// dismissed or hides by itself, so neither a reload nor a replay of the stream shows it again.
// `critical` stays until dismissed; `info` and `warning` hide by themselves after AUTO_HIDE_MS
// (20 s; the page's `?broadcast_hide=<ms>` shortens it for tests).
// Any banner goes when its broadcast expires.

const SEEN_KEY = "parley.broadcasts.seen";
const SEEN_LIMIT = 200;
const AUTO_HIDE_MS = 20_000; // info and warning; critical stays until dismissed
const LEVELS = new Set(["info", "warning", "critical"]);

const ICONS = {
  info: '<circle cx="12" cy="12" r="9"/><path d="M12 11v5M12 8h.01"/>',
  warning: '<path d="M12 3 2 20h20L12 3z"/><path d="M12 10v4M12 17h.01"/>',
  critical: '<circle cx="12" cy="12" r="9"/><path d="M12 7v6M12 16h.01"/>',
};

function icon(level) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.classList.add("icon");
  svg.innerHTML = ICONS[level]; // fixed markup of our own, never the message
  return svg;
}

export class Broadcasts {
  constructor(root, { autoHideMs = AUTO_HIDE_MS, fetchImpl = (...a) => fetch(...a), storage = localStorage } = {}) {
    this.root = root;
    this.autoHideMs = autoHideMs;
    this.fetch = fetchImpl;
    this.storage = storage;
    this.shown = new Map(); // broadcast id -> banner element
    // Dismissed in another tab: gone here too.
    addEventListener("storage", (event) => {
      if (event.key !== SEEN_KEY) return;
      for (const id of this.seen()) if (this.shown.has(id)) this.hide(id);
    });
  }

  async load() {
    const response = await this.fetch("/api/broadcasts", { credentials: "same-origin" }).catch(() => null);
    if (!response?.ok) return;
    const body = await response.json();
    const active = [...(Array.isArray(body) ? body : body.broadcasts || [])];
    // Oldest first, as they would have arrived live: each is put on top, so the newest ends there.
    active.sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0));
    for (const broadcast of active) this.show(broadcast);
  }

  /** An envelope from the stream; true when it was a broadcast shown now. */
  receive(envelope) {
    return envelope.type === "broadcast" ? this.show(envelope.payload) : false;
  }

  show(broadcast) {
    if (!broadcast?.id || this.shown.has(broadcast.id) || this.seen().includes(broadcast.id)) return false;
    const left = broadcast.expires_at ? Date.parse(broadcast.expires_at) - Date.now() : Infinity;
    if (left <= 0) return false;
    const level = LEVELS.has(broadcast.level) ? broadcast.level : "info";
    const banner = document.createElement("div");
    banner.className = "broadcast";
    banner.dataset.level = level;
    banner.dataset.id = broadcast.id;
    // A critical alert interrupts a screen reader; the others wait their turn.
    banner.setAttribute("role", level === "critical" ? "alert" : "status");
    const message = document.createElement("span");
    message.className = "broadcast-message";
    message.textContent = broadcast.message;
    const close = document.createElement("button");
    close.type = "button";
    close.className = "broadcast-dismiss";
    close.setAttribute("aria-label", "Dismiss");
    close.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true" class="icon"><path d="M6 6l12 12M18 6 6 18"/></svg>';
    close.addEventListener("click", () => this.hide(broadcast.id));
    banner.append(icon(level), message, close);
    this.root.prepend(banner); // newest on top
    this.shown.set(broadcast.id, banner);
    const autoHide = level === "critical" ? Infinity : this.autoHideMs;
    const hideIn = Math.min(autoHide, left);
    // setTimeout overflows past ~24.8 days: an alert that lives longer just stays until dismissed.
    if (hideIn < 2 ** 31 - 1) banner.hideTimer = setTimeout(() => this.hide(broadcast.id), hideIn);
    return true;
  }

  hide(id) {
    const banner = this.shown.get(id);
    if (!banner) return;
    clearTimeout(banner.hideTimer);
    this.remember(id);
    this.shown.delete(id);
    banner.classList.add("leaving");
    // Slide out, then go; removed at once when there is no animation to wait for.
    const remove = () => banner.remove();
    banner.addEventListener("animationend", remove, { once: true });
    setTimeout(remove, 400);
  }

  seen() {
    try {
      const ids = JSON.parse(this.storage.getItem(SEEN_KEY) || "[]");
      return Array.isArray(ids) ? ids : [];
    } catch {
      return [];
    }
  }

  remember(id) {
    const ids = this.seen().filter((seen) => seen !== id);
    ids.push(id);
    this.storage.setItem(SEEN_KEY, JSON.stringify(ids.slice(-SEEN_LIMIT)));
  }
}
