// Parley's service worker: shows Web Push notifications and opens the discussion on click.
//
// The push payload is `{"notification": {id, type, priority, discussion_id, response_id,
// actor: {id, name}, excerpt, created_at, read_at}}` (app/notify_worker.py: push_job).
// `tag` is the notification id, so a repeated delivery (at-least-once) replaces the shown
// notification instead of showing it twice (FR-011).

const TITLES = {
  reply: (who) => `${who} replied to you`,
  mention: (who) => `${who} mentioned you`,
  activity: () => "New activity in a discussion you follow",
  common_ground: () => "New common ground in a discussion you follow",
  broadcast: () => "Announcement",
};

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = {};
  }
  const n = data.notification;
  if (!n || typeof n.id !== "string") return;
  const who = (n.actor && n.actor.name) || "Someone";
  const title = (TITLES[n.type] || (() => "Parley"))(who);
  event.waitUntil(
    self.registration.showNotification(title, {
      body: n.excerpt || "",
      tag: n.id,
      renotify: false,
      requireInteraction: n.priority === "high",
      data: { id: n.id, discussion_id: n.discussion_id, response_id: n.response_id },
    }),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const { discussion_id: discussion, response_id: response } = event.notification.data || {};
  const target = new URL("/", self.location.origin);
  if (discussion) target.searchParams.set("discussion", discussion);
  if (response) target.hash = `response-${response}`;
  event.waitUntil(
    (async () => {
      // SC-006: counted by the server (app/api/beacons.py); a lost report must not stop the click.
      fetch("/api/beacons", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ beacons: [{ kind: "push_click" }] }),
      }).catch(() => null);
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      for (const client of windows) {
        // A Parley page is already open: bring it forward and let it navigate itself.
        if (new URL(client.url).origin === self.location.origin && "focus" in client) {
          client.postMessage({ type: "parley:open", discussion_id: discussion, response_id: response });
          return client.focus();
        }
      }
      return self.clients.openWindow(target.href);
    })(),
  );
});
