// Notifications for the Parley page: a small ES module, no dependencies.
//
//   import { Notifications } from "/static/notifications.js";
//   const notes = new Notifications({ onChange: (list) => render(list) });
//   await notes.load();                        // GET /api/notifications (the source of truth)
//   stream.addEventListener("notification", (e) => notes.receive(JSON.parse(e.data)));
//   stream.addEventListener("notification_read", (e) => notes.receive(JSON.parse(e.data)));
//   stream.addEventListener("sync_required", () => notes.load());
//   button.onclick = () => notes.enablePush(); // permission asked only after a user action
//
// Every tab gets every notification event; `receive` keys them by notification id, so a
// notification is shown once per tab however often it arrives (FR-011, at-least-once).

import { beacons } from "/static/beacons.js";

export class Notifications {
  constructor({ onChange = () => {}, fetchImpl = (...a) => fetch(...a) } = {}) {
    this.byId = new Map();
    this.onChange = onChange;
    this.fetch = fetchImpl;
  }

  get list() {
    return [...this.byId.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  }

  get unread() {
    return this.list.filter((n) => !n.read_at).length;
  }

  async load() {
    const r = await this.fetch("/api/notifications?limit=50", { credentials: "same-origin" });
    if (!r.ok) return;
    this.byId = new Map((await r.json()).map((n) => [n.id, n]));
    this.onChange(this.list);
  }

  // An envelope from the stream (SSE `data`, or a WebSocket/poll message).
  receive(envelope) {
    if (envelope.type === "notification") {
      const n = envelope.payload.notification;
      if (this.byId.has(n.id)) return false; // a repeat delivery: already shown
      this.byId.set(n.id, n);
    } else if (envelope.type === "notification_read") {
      for (const id of envelope.payload.ids) {
        const n = this.byId.get(id);
        if (n) n.read_at = envelope.payload.read_at;
      }
    } else {
      return false;
    }
    this.onChange(this.list);
    return true;
  }

  async markRead(id) {
    await this.fetch(`/api/notifications/${encodeURIComponent(id)}/read`, {
      method: "POST",
      credentials: "same-origin",
    });
  }

  async markAllRead() {
    await this.fetch("/api/notifications/read-all", { method: "POST", credentials: "same-origin" });
  }

  // Call from a click handler only: browsers refuse (or penalise) permission prompts that
  // no user action caused.
  async enablePush() {
    if (!("serviceWorker" in navigator) || !("PushManager" in window)) return "unsupported";
    const asking = Notification.permission === "default";
    if (asking) beacons.record("push_permission", { outcome: "asked" });
    const permission = await Notification.requestPermission();
    // "default" again: the prompt was dismissed, which is neither (SC-005 counts answers).
    if (asking && permission !== "default") beacons.record("push_permission", { outcome: permission });
    if (permission !== "granted") return permission;
    const registration = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
    const r = await this.fetch("/api/push/vapid-public-key", { credentials: "same-origin" });
    const { key } = await r.json();
    let subscription = await registration.pushManager.getSubscription();
    if (!subscription) {
      subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: base64UrlToBytes(key),
      });
    }
    await this.fetch("/api/push/subscriptions", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(subscription.toJSON()),
    });
    return "granted";
  }

  async disablePush() {
    const registration = await navigator.serviceWorker?.getRegistration("/");
    const subscription = await registration?.pushManager.getSubscription();
    if (!subscription) return;
    await this.fetch("/api/push/subscriptions", {
      method: "DELETE",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ endpoint: subscription.endpoint }),
    });
    await subscription.unsubscribe();
  }
}

function base64UrlToBytes(text) {
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}
