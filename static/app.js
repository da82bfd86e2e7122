// The discussion page: sign-in, the discussion list, a live thread and its composer.
// URL options for testing and diagnosis: ?transport=sse|ws|poll forces a transport;
// ?backoff=<ms> and ?backoff_max=<ms> shorten the reconnection delays (1 s doubling to 30 s);
// ?broadcast_hide=<ms> shortens how long an info or warning broadcast stays (20 s);
// ?beacon_every=<ms> sends the page's beacons this often (30 s).

import { beacons } from "/static/beacons.js";
import { Broadcasts } from "/static/broadcasts.js";
import { CommonGroundPanel } from "/static/common_ground.js";
import { FollowedList } from "/static/followed.js";
import { Notifications } from "/static/notifications.js";
import { Outbox, ParleyClient, STATE } from "/static/parley.js";
import { ActivitySignals, PresenceView, TypingSignals } from "/static/presence.js";
import { TabPresence } from "/static/tab_presence.js";

const RENDER_EVERY_MS = 500; // FR-005: bursts coalesce into one render per half second
const BURST_THRESHOLD = 25; // more new responses than this while reading: a banner, not a flood
const AT_BOTTOM_PX = 48;
const PAGE = 200;
const LIST_REFRESH_MS = 60_000; // the sidebar's lists: re-read this often while the page is visible

const $ = (selector) => document.querySelector(selector);
const params = new URLSearchParams(location.search);
const state = {
  me: null,
  discussionId: null,
  responses: new Map(), // response id -> element
  pending: [], // envelopes waiting for the next render
  held: [], // responses held back behind the banner (a burst while reading)
  unseen: 0, // new responses below the reader's position
  lastRender: 0,
  renderTimer: null,
  client: null,
  // ?fail_after=<ms>: how long an offline post waits before "Failed" (30 s; shorter for tests).
  outbox: new Outbox({ failAfterMs: Number(params.get("fail_after")) || 30000 }),
  discussion: null,
  presence: null, // PresenceView of the open discussion
  typing: null, // TypingSignals for the composer
  notes: new Notifications({ onChange: () => renderNotifications() }),
  broadcasts: new Broadcasts(document.querySelector("#broadcasts"), {
    autoHideMs: Number(params.get("broadcast_hide")) || undefined,
  }),
  panel: null, // CommonGroundPanel of the open discussion
};

// --- small helpers ---------------------------------------------------------------------------

async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    headers: options.body ? { "Content-Type": "application/json" } : {},
    ...options,
  });
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(body?.error?.message || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function initials(name) {
  return (name || "?").trim().split(/\s+/).slice(0, 2).map((part) => part[0]).join("").toUpperCase();
}

function hue(text) {
  let h = 0;
  for (const char of text || "") h = (h * 31 + char.charCodeAt(0)) % 360;
  return h;
}

function avatar(element, user) {
  element.textContent = initials(user?.name);
  element.style.setProperty("--hue", hue(user?.id));
}

function timeLabel(iso) {
  const date = new Date(iso);
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// --- sign-in ---------------------------------------------------------------------------------

async function ensureSignedIn() {
  try {
    await api("/api/me/follows");
    state.me = JSON.parse(localStorage.getItem("parley.me") || "null") || { id: "", name: "You" };
    return true;
  } catch (error) {
    if (error.status !== 401) throw error;
  }
  $("#login").hidden = false;
  $("#login-form input").focus();
  return new Promise((resolve) => {
    $("#login-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const name = new FormData(event.target).get("name").trim();
      try {
        const body = await api("/api/dev/login", { method: "POST", body: JSON.stringify({ name }) });
        localStorage.setItem("parley.me", JSON.stringify(body.user));
        state.me = body.user;
        $("#login").hidden = true;
        resolve(true);
      } catch (error) {
        const message = $("#login-error");
        message.hidden = false;
        message.textContent = error.status === 404 ? "Sign in through the platform to continue." : error.message;
      }
    });
  });
}

function showMe() {
  $("#me").hidden = false;
  $("#me-name").textContent = state.me.name;
  avatar($("#me-avatar"), state.me);
  $("#sign-out").onclick = async () => {
    state.client?.signOut(); // closes the streams of every tab of this browser
    await api("/api/session", { method: "DELETE" }).catch(() => null);
    localStorage.removeItem("parley.me");
    location.href = "/";
  };
}

// --- the discussion list ---------------------------------------------------------------------

/** The list body of GET /api/discussions, whichever way the server wraps it. */
const discussionsOf = (body) => (Array.isArray(body) ? body : body?.discussions || []);

function discussionItem(discussion, { unread = 0, meta = "" } = {}) {
  const item = document.createElement("li");
  item.dataset.id = discussion.id;
  const link = document.createElement("a");
  link.href = `/d/${encodeURIComponent(discussion.id)}`;
  const title = document.createElement("span");
  title.className = "discussion-name";
  title.textContent = discussion.title;
  link.append(title);
  if (meta) {
    const detail = document.createElement("span");
    detail.className = "discussion-meta";
    detail.textContent = meta;
    link.append(detail);
  }
  if (discussion.id === state.discussionId) item.classList.add("current");
  item.append(link);
  if (unread > 0 && discussion.id !== state.discussionId) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = unread;
    item.append(badge);
  }
  return item;
}

function people(count) {
  return `${count} participant${count === 1 ? "" : "s"}`;
}

/** "Your discussions": those the server says you created, joined or responded to (so ones made
 * through the API appear too), plus any you follow; unread counts come from the follows. */
async function loadDiscussions() {
  const [mine, follows] = await Promise.all([
    api("/api/discussions?scope=mine&limit=50").then(discussionsOf).catch(() => []),
    api("/api/me/follows").catch(() => []),
  ]);
  const followed = new Map(follows.map((follow) => [follow.discussion_id, follow]));
  const listed = new Set(mine.map((discussion) => discussion.id));
  const followedOnly = follows
    .filter((follow) => !listed.has(follow.discussion_id))
    .map((follow) => ({ id: follow.discussion_id, title: follow.title, last_activity_at: follow.last_activity_at }));
  yourDiscussions().replace(
    [...mine, ...followedOnly].map((discussion) => ({
      discussion,
      unread: followed.get(discussion.id)?.unread_count || 0,
      lastActivityAt: followed.get(discussion.id)?.last_activity_at || discussion.last_activity_at,
    })),
  );
}

/** "Your discussions", updated live by `activity` events (FR-008; static/followed.js). */
let followedList = null;
function yourDiscussions() {
  followedList ??= new FollowedList($("#discussions"), { makeItem: discussionItem, empty: $("#discussions-empty") });
  return followedList;
}

/** "Public discussions": recent public discussions with their participant counts. */
async function loadPublicDiscussions() {
  const recent = await api("/api/discussions?scope=public&limit=50").then(discussionsOf).catch(() => []);
  $("#public-discussions").replaceChildren(
    ...recent.map((discussion) => discussionItem(discussion, { meta: people(discussion.participant_count ?? 0) })),
  );
  $("#public-empty").hidden = recent.length > 0;
}

function loadLists() {
  loadDiscussions();
  loadPublicDiscussions();
}

function wireNewDiscussion() {
  $("#new-discussion").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const created = await api("/api/discussions", {
      method: "POST",
      body: JSON.stringify({ title: form.get("title").trim(), visibility: form.get("visibility") }),
    });
    await api(`/api/discussions/${created.id}/follow`, { method: "PUT" });
    location.href = `/d/${encodeURIComponent(created.id)}`;
  });
}

// --- the thread ------------------------------------------------------------------------------

const thread = () => $("#thread");

function atBottom() {
  const el = thread();
  return el.scrollHeight - el.scrollTop - el.clientHeight < AT_BOTTOM_PX;
}

function scrollToBottom() {
  const el = thread();
  el.scrollTop = el.scrollHeight;
}

function responseElement(response) {
  const item = document.createElement("li");
  item.className = "response";
  item.dataset.id = response.id;
  if (response.author.id === state.me?.id) item.classList.add("mine");
  const face = document.createElement("span");
  face.className = "avatar";
  avatar(face, response.author);
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  const head = document.createElement("div");
  head.className = "head";
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = response.author.name;
  const time = document.createElement("time");
  time.dateTime = response.created_at;
  time.textContent = timeLabel(response.created_at);
  const note = document.createElement("span");
  note.className = "note";
  head.append(author, time, note);
  const body = document.createElement("div");
  body.className = "body";
  bubble.append(head, body);
  item.append(face, bubble);
  fill(item, response);
  return item;
}

function fill(item, response) {
  item.querySelector(".body").textContent = response.deleted ? "This response was deleted." : response.body;
  item.classList.toggle("deleted", response.deleted);
  item.querySelector(".note").textContent = response.deleted ? "" : response.edited_at ? "edited" : "";
}

/** Insert or update one response in id order (ids grow with time); true if it is new. */
function upsert(response, animate) {
  const existing = state.responses.get(response.id);
  if (existing) {
    fill(existing, response);
    return false;
  }
  const item = responseElement(response);
  if (animate) item.classList.add("is-new");
  const list = thread();
  let before = null;
  for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
    if (node.dataset.id && BigInt(node.dataset.id) < BigInt(response.id)) break;
    if (node.dataset.id) before = node;
  }
  list.insertBefore(item, before ?? list.querySelector(".response.pending"));
  state.responses.set(response.id, item);
  $("#thread-empty").hidden = true;
  return true;
}

function scheduleRender() {
  if (state.renderTimer) return;
  const wait = Math.max(0, state.lastRender + RENDER_EVERY_MS - performance.now());
  state.renderTimer = setTimeout(render, wait);
}

/** One render for everything that arrived since the last (FR-005); never more than one per
 * 500 ms, so a burst cannot thrash layout, and the event handlers only queue (NFR-018). */
function render() {
  state.renderTimer = null;
  state.lastRender = performance.now();
  const envelopes = state.pending.splice(0);
  const wasAtBottom = atBottom();
  const scrollTop = thread().scrollTop;
  const posted = envelopes.filter((e) => e.type === "response_posted").map((e) => e.payload.response);
  const fresh = posted.filter((r) => !state.responses.has(r.id));
  // Counted across renders, so a burst that trickles in is held back just like one that lands at once.
  if (!wasAtBottom && state.unseen + state.held.length + fresh.length > BURST_THRESHOLD) {
    state.held.push(...fresh.filter((r) => !state.held.some((h) => h.id === r.id)));
  } else {
    for (const response of [...state.held.splice(0), ...posted]) {
      if (upsert(response, true) && response.author.id !== state.me?.id) state.unseen += wasAtBottom ? 0 : 1;
    }
  }
  for (const envelope of envelopes) {
    if (envelope.type !== "response_posted") upsert(envelope.payload.response, false);
  }
  // FR-002: keep the reader's place unless they were at the latest response.
  if (wasAtBottom) scrollToBottom();
  else thread().scrollTop = scrollTop;
  updateBanner();
}

function updateBanner() {
  const banner = $("#new-banner");
  const count = state.held.length + state.unseen;
  banner.hidden = count === 0;
  banner.textContent = `${count} new response${count === 1 ? "" : "s"} ↓`;
}

function showLatest() {
  if (state.held.length) {
    state.pending.unshift(...state.held.splice(0).map((response) => ({ type: "response_posted", payload: { response } })));
  }
  for (const envelope of state.pending.splice(0)) upsert(envelope.payload.response, true);
  state.unseen = 0;
  updateBanner();
  scrollToBottom();
}

/** Every response of the discussion, oldest first, and the cursor to resume from. */
async function fetchAll(discussionId) {
  let after = "";
  let cursor = null;
  const all = [];
  for (;;) {
    const page = await api(`/api/discussions/${encodeURIComponent(discussionId)}/responses?limit=${PAGE}&after=${after}`);
    cursor ??= page.cursor; // the first read's cursor: resuming from it misses nothing
    all.push(...page.responses);
    if (page.responses.length < PAGE) return { responses: all, cursor };
    after = page.responses[page.responses.length - 1].id;
  }
}

/** sync_required: the server could not replay what we missed; refetch and merge. */
async function resync() {
  if (!state.discussionId) return;
  const { responses } = await fetchAll(state.discussionId);
  const wasAtBottom = atBottom();
  for (const response of responses) {
    if (upsert(response, true) && !wasAtBottom && response.author.id !== state.me?.id) state.unseen += 1;
  }
  if (wasAtBottom) scrollToBottom();
  updateBanner();
}

async function openDiscussion(discussionId) {
  let discussion;
  try {
    discussion = await api(`/api/discussions/${encodeURIComponent(discussionId)}`);
  } catch (error) {
    if (error.status === 404) {
      $("#missing").hidden = false;
      return null;
    }
    throw error;
  }
  document.title = `${discussion.title} · Parley`;
  $("#title").textContent = discussion.title;
  state.discussion = discussion;
  state.presence = new PresenceView({ selfId: state.me?.id || null, onChange: renderPresence });
  renderPresence();
  loadPresence(discussionId);
  // Busy rooms publish only some joins and leaves (the server caps them): a jittered snapshot
  // every half minute keeps the list and count right.
  setInterval(() => { if (!document.hidden) loadPresence(discussionId); }, 25_000 + Math.random() * 10_000);
  $("#discussion").hidden = false;
  state.panel = new CommonGroundPanel($("#common-ground"), { onStance: showStanceDraft });
  const { responses, cursor } = await fetchAll(discussionId);
  for (const response of responses) {
    upsert(response, false);
    if (response.author.id === state.me?.id) state.panel.recordStances(response.stances);
  }
  // Read after the responses' cursor was taken: an update this read misses is replayed from it.
  await loadAnalysis(discussionId);
  $("#thread-empty").hidden = responses.length > 0;
  scrollToBottom();
  wireThread(discussionId);
  wireCommonGround(discussionId);
  return cursor;
}

// --- common ground (FR-012..016) ------------------------------------------------------------

/** The current analysis over REST: on open (shown at once) and after sync_required (offered,
 * so it animates, or waits behind the pill while the reader is busy with the panel). */
async function loadAnalysis(discussionId, { offer = false } = {}) {
  const analysis = await api(`/api/discussions/${encodeURIComponent(discussionId)}/analysis`).catch(() => null);
  if (!analysis || !state.panel) return;
  if (offer) state.panel.offer(analysis);
  else state.panel.show(analysis);
}

function handleAnalysisEvent(envelope) {
  if (envelope.type === "analysis_refreshing") state.panel?.refreshing(envelope.payload?.version);
  else if (envelope.type === "analysis_updated") state.panel?.offer(envelope.payload);
  else if (envelope.type === "proposition_added") state.panel?.addProposition(envelope.payload.proposition);
}

/** Stances picked in the panel ride on the next response; the line above the composer says so. */
function showStanceDraft(stances) {
  const count = Object.keys(stances).length;
  $("#stance-draft").hidden = count === 0;
  $("#stance-draft-text").textContent =
    `${count} stance${count === 1 ? "" : "s"} will be sent with your response`;
  $("#composer textarea").placeholder = count ? "Say why…" : "Share your view…";
}

function wireCommonGround(discussionId) {
  const panel = $("#common-ground");
  const toggle = $("#cg-toggle");
  // Phone width: the panel folds into its head above the thread (style.css); this opens it.
  toggle.addEventListener("click", () => {
    const open = panel.classList.toggle("expanded");
    toggle.setAttribute("aria-expanded", String(open));
    toggle.textContent = open ? "Hide" : "Show";
  });
  $("#stance-clear").addEventListener("click", () => {
    state.panel.draft.clear();
    state.panel.paintStances();
    showStanceDraft({});
  });
  const form = $("#new-proposition");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = form.querySelector("input");
    const text = input.value.trim();
    if (!text) return;
    try {
      const proposition = await api(`/api/discussions/${encodeURIComponent(discussionId)}/propositions`, {
        method: "POST",
        body: JSON.stringify({ text }),
      });
      input.value = "";
      input.setCustomValidity("");
      state.panel.addProposition(proposition);
    } catch (error) {
      input.setCustomValidity(error.message);
      input.reportValidity();
      input.addEventListener("input", () => input.setCustomValidity(""), { once: true });
    }
  });
  for (const control of form.elements) control.disabled = false;
}

// --- presence and typing (FR-017..021, FR-033) ---------------------------------------------

async function loadPresence(discussionId) {
  const snapshot = await api(`/api/discussions/${encodeURIComponent(discussionId)}/presence`).catch(() => null);
  if (snapshot && state.presence) state.presence.loadSnapshot(snapshot);
}

function renderPresence() {
  const discussion = state.discussion;
  const view = state.presence;
  if (!discussion || !view) return;
  const count = Math.max(view.count, discussion.participant_count || 0);
  $("#meta").textContent =
    `${discussion.visibility === "private" ? "Private" : "Public"} · ${count} here now`;
  const online = $("#online");
  online.replaceChildren(
    ...view.list().slice(0, 8).map((person) => {
      const item = document.createElement("li");
      const face = document.createElement("span");
      face.className = `avatar small ${person.status === "away" ? "away" : ""}`;
      face.title = `${person.name} (${person.status})`;
      avatar(face, person);
      item.append(face);
      return item;
    }),
  );
  $("#typing-line").textContent = view.typingLine();
}

/** Typing goes over the WebSocket when this tab holds one, else over REST. */
function sendTyping(discussionId, on) {
  const client = state.client;
  if (client?.isLeader && client.transport?.name === "ws") {
    client.send({ type: "typing", discussion_id: discussionId, typing: on });
    return;
  }
  api(`/api/discussions/${encodeURIComponent(discussionId)}/typing`, {
    method: "PUT",
    body: JSON.stringify({ typing: on }),
  }).catch(() => null);
}

// --- notifications (FR-006..011) ----------------------------------------------------------

function renderNotifications() {
  const unread = state.notes.unread;
  const count = $("#bell-count");
  count.hidden = unread === 0;
  count.textContent = String(unread);
  $("#notification-list").replaceChildren(
    ...state.notes.list.slice(0, 20).map((note) => {
      const item = document.createElement("li");
      item.className = `${note.read_at ? "" : "unread"} ${note.priority === "high" ? "high" : ""}`;
      item.dataset.notificationId = note.id;
      const who = note.actor?.name || "Someone";
      const what = { reply: "replied to you", mention: "mentioned you", activity: "posted in a discussion you follow",
        common_ground: "common ground emerged", broadcast: "announcement" }[note.type] || note.type;
      const link = document.createElement("a");
      link.href = note.discussion_id ? `/d/${encodeURIComponent(note.discussion_id)}` : "#";
      link.textContent = `${who} ${what}`;
      link.addEventListener("click", () => state.notes.markRead(note.id));
      item.append(link);
      return item;
    }),
  );
}

function wireNotifications() {
  $("#bell").addEventListener("click", () => {
    const popover = $("#notifications");
    popover.hidden = !popover.hidden;
    // Just under the bell, wherever the header's wrapping put it.
    const bell = $("#bell").getBoundingClientRect();
    popover.style.top = `${bell.bottom - $(".main").getBoundingClientRect().top + 8}px`;
  });
  $("#read-all").addEventListener("click", () => state.notes.markAllRead());
  // Permission is asked only after this click (browsers block unprompted requests).
  $("#enable-push").addEventListener("click", () => state.notes.enablePush().catch((e) => console.warn(e)));
  navigator.serviceWorker?.addEventListener("message", (event) => {
    if (event.data?.type === "parley:open" && event.data.discussion_id) {
      location.href = `/d/${encodeURIComponent(event.data.discussion_id)}`;
    }
  });
  state.notes.load();
}

function wireThread(discussionId) {
  thread().addEventListener("scroll", () => {
    if (atBottom() && !state.held.length && state.unseen) {
      state.unseen = 0;
      updateBanner();
    }
  }, { passive: true });
  $("#new-banner").addEventListener("click", showLatest);
  thread().addEventListener("animationend", (event) => event.target.classList.remove("is-new"));

  const follow = $("#follow");
  let following = false;
  api("/api/me/follows").then((follows) => {
    following = follows.some((f) => f.discussion_id === discussionId);
    follow.textContent = following ? "Following" : "Follow";
  });
  follow.addEventListener("click", async () => {
    await api(`/api/discussions/${discussionId}/follow`, { method: following ? "DELETE" : "PUT" });
    following = !following;
    follow.textContent = following ? "Following" : "Follow";
    loadDiscussions();
  });

  const composer = $("#composer");
  const textarea = composer.querySelector("textarea");
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) composer.requestSubmit();
  });
  state.typing = new TypingSignals({ send: (on) => sendTyping(discussionId, on) });
  textarea.addEventListener("input", () => {
    if (textarea.value.trim()) state.typing.keystroke();
    else state.typing.stop();
  });
  textarea.addEventListener("blur", () => state.typing.stop());
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = textarea.value.trim();
    if (!body) return;
    textarea.value = "";
    state.typing.posted(); // the server stops the indicator when the response is posted
    const stances = state.panel.draftStances;
    state.outbox.post(discussionId, body, Object.keys(stances).length ? { stances } : {});
    state.panel.clearDraft();
  });
  for (const control of composer.elements) control.disabled = false;
  state.outbox.addEventListener("change", (event) => showOutboxItem(event.detail));
}

/** Posts in the outbox show at the end of the thread: "Sending…", then the real response. */
function showOutboxItem(item) {
  if (item.discussionId !== state.discussionId) return; // restored after a reload, for another discussion
  let element = thread().querySelector(`[data-client-id="${item.clientId}"]`);
  if (item.state === "sent") {
    element?.remove();
    upsert(item.response, true);
    scrollToBottom();
    // Responding makes a discussion one of yours: list it now rather than at the next refresh.
    if (!$(`#discussions li[data-id="${CSS.escape(item.discussionId)}"]`)) loadDiscussions();
    return;
  }
  if (!element) {
    element = responseElement({
      id: "", author: state.me, body: item.body, created_at: new Date().toISOString(), deleted: false, edited_at: null,
    });
    element.classList.add("pending", "mine");
    element.dataset.clientId = item.clientId;
    delete element.dataset.id;
    thread().append(element);
    $("#thread-empty").hidden = true;
  }
  element.dataset.state = item.state;
  const note = element.querySelector(".note");
  note.replaceChildren();
  if (item.state === "sending") {
    note.textContent = "Sending…";
  } else {
    note.textContent = `Failed${item.error ? `: ${item.error}` : ""} `;
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "link retry";
    retry.textContent = "Retry";
    retry.onclick = () => state.outbox.retry(item.clientId);
    note.append(retry);
  }
  scrollToBottom();
}

// --- the connection --------------------------------------------------------------------------

const TRANSPORT_LABEL = { sse: "live", ws: "live", poll: "live (polling)" };

function showStatus(status) {
  const box = $("#status");
  box.dataset.state = status.state;
  box.dataset.transport = status.transport || "";
  const banner = $("#connection-banner");
  const text = $("#status-text");
  const bannerText = $("#connection-banner-text");
  $("#refresh").hidden = status.state !== STATE.FAILED;
  switch (status.state) {
    case STATE.CONNECTED:
      text.textContent = `Connected, ${TRANSPORT_LABEL[status.transport] || "live"}`;
      banner.hidden = true;
      break;
    case STATE.CONNECTING:
      text.textContent = "Connecting…";
      banner.hidden = true;
      break;
    case STATE.OFFLINE:
      text.textContent = "Offline";
      bannerText.textContent = "Connection lost, reconnecting… (waiting for the network)";
      banner.hidden = false;
      break;
    case STATE.RECONNECTING: {
      const seconds = Math.ceil((status.retryInMs || 0) / 1000);
      text.textContent = "Reconnecting…";
      bannerText.textContent = `Connection lost, reconnecting…${seconds ? ` (try ${status.attempt} in ${seconds} s)` : ""}`;
      banner.hidden = false;
      break;
    }
    case STATE.PAUSED:
      // FR-035: closed after a long inactivity, on purpose; nothing is wrong, so no alert.
      text.textContent = "Paused — click or press a key to resume";
      banner.hidden = true;
      break;
    case STATE.FAILED:
      text.textContent = ["auth_expired", "signed_out"].includes(status.reason) ? "Signed out" : "Disconnected";
      bannerText.textContent =
        status.reason === "auth_expired"
          ? "Your session ended. Refresh to sign in again."
          : status.reason === "signed_out"
            ? "You signed out. Refresh to sign in again."
            : `Could not reconnect after ${status.attempt} tries.`;
      banner.hidden = false;
      break;
  }
}

/** NFR-013: a fresh token (and cookie) before the old one expires. An embedding platform defines
 * `window.parleyRefreshToken()` resolving to a JWT; under the development login the page signs in
 * again under the same name. */
async function refreshToken() {
  if (typeof window.parleyRefreshToken === "function") {
    const token = await window.parleyRefreshToken();
    await api("/api/session", { method: "POST", headers: { Authorization: `Bearer ${token}` } });
    return token;
  }
  const body = await api("/api/dev/login", { method: "POST", body: JSON.stringify({ name: state.me.name }) });
  return body.token;
}

function connect(discussionId, cursor) {
  const transport = ["sse", "ws", "poll"].includes(params.get("transport")) ? params.get("transport") : "auto";
  const backoff = Number(params.get("backoff")) || 1000;
  const backoffMax = Number(params.get("backoff_max")) || 30000;
  const client = new ParleyClient({
    discussions: discussionId ? [discussionId] : [],
    cursor,
    transport,
    backoffBaseMs: Math.max(50, backoff),
    backoffMaxMs: Math.max(50, backoffMax),
    refreshToken,
  });
  state.client = client;
  window.parleyClient = client; // for diagnosis from the console, and the browser tests
  beacons.watch(client);
  client.addEventListener("status", (event) => {
    showStatus(event.detail);
    if (event.detail.state === STATE.CONNECTED) state.outbox.flush();
  });
  client.addEventListener("event", (event) => {
    const envelope = event.detail;
    if (envelope.discussion_id === discussionId) {
      if (envelope.type.startsWith("response_")) {
        state.pending.push(envelope);
        scheduleRender();
        const response = envelope.payload.response;
        if (envelope.type === "response_posted" && response?.author.id === state.me?.id) {
          state.panel?.recordStances(response.stances);
        }
      }
      if (envelope.type.startsWith("analysis_") || envelope.type === "proposition_added") handleAnalysisEvent(envelope);
      state.presence?.handleEvent(envelope);
    }
    if (envelope.type === "activity") yourDiscussions().apply(envelope.payload);
    state.notes.receive(envelope);
    state.broadcasts.receive(envelope);
  });
  client.addEventListener("sync", () => {
    resync();
    state.notes.load();
    state.broadcasts.load();
    if (discussionId) {
      loadPresence(discussionId); // presence is never replayed: take a snapshot
      loadAnalysis(discussionId, { offer: true });
    }
  });
  // Visible or hidden, and any interaction: presence status (and no idle closing while active).
  // The leader tab sends one status for all tabs: away only when every tab is (FR-009).
  const tabPresence = new TabPresence(client);
  tabPresence.start();
  new ActivitySignals({ send: (status, force) => tabPresence.set(status, force) }).start();
  $("#refresh").addEventListener("click", () => location.reload());
  showStatus(client.status);
  client.start();
}

// --- start -----------------------------------------------------------------------------------

/** The discussion this page shows: `/d/<id>`, or `/?discussion=<id>`, which a push click
 * opens when no Parley window is open (static/sw.js); that one moves to `/d/<id>` in place, so
 * the address bar, a reload and a shared link all show the discussion. */
function discussionFromUrl() {
  const match = /^\/d\/([^/]+)\/?$/.exec(location.pathname);
  if (match) return decodeURIComponent(match[1]);
  const named = location.pathname === "/" ? params.get("discussion") : null;
  if (!named) return null;
  const rest = new URLSearchParams(params);
  rest.delete("discussion");
  const query = rest.toString();
  history.replaceState(null, "", `/d/${encodeURIComponent(named)}${query ? `?${query}` : ""}${location.hash}`);
  return named;
}

/** `#response-<id>` (a notification's link): bring that response into view and mark it. */
function showLinkedResponse() {
  const match = /^#response-(\d+)$/.exec(location.hash);
  const item = match && state.responses.get(match[1]);
  if (!item) return;
  item.scrollIntoView({ block: "center" });
  item.classList.add("is-new", "linked");
}

async function main() {
  state.discussionId = discussionFromUrl();
  wireNewDiscussion();
  await ensureSignedIn();
  beacons.start({ flushEveryMs: Number(params.get("beacon_every")) || undefined });
  showMe();
  wireNotifications();
  state.broadcasts.load();
  loadLists();
  setInterval(() => { if (!document.hidden) loadLists(); }, LIST_REFRESH_MS);
  document.body.dataset.view = state.discussionId ? "discussion" : "home";
  let cursor = null;
  if (state.discussionId) {
    cursor = await openDiscussion(state.discussionId);
    showLinkedResponse();
  } else {
    $("#home").hidden = false;
  }
  // Posts written before a reload and not sent yet (kept in localStorage): shown and sent now.
  state.outbox.open(state.me?.id);
  connect(state.discussionId && cursor !== null ? state.discussionId : null, cursor);
  document.body.dataset.ready = "true";
}

main().catch((error) => {
  console.error(error);
  const banner = $("#connection-banner");
  banner.hidden = false;
  $("#connection-banner-text").textContent = `Something went wrong: ${error.message}`;
});
