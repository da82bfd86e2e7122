// Presence and typing for the discussion page: display state and the signals the page sends.
// Dependency-free ES module. The page owns the DOM and the connection; this module owns the
// rules (API.md "Presence, typing, broadcasts"; FR-017..021, FR-033..036):
//
//   import { PresenceView, TypingSignals, ActivitySignals } from '/static/presence.js';
//   const view = new PresenceView({ selfId: me.id, onChange: render });
//   view.loadSnapshot(await (await fetch(`/api/discussions/${id}/presence`)).json());
//   stream.addEventListener(type, (e) => view.handleEvent(JSON.parse(e.data)));  // every event type
//   render = () => { countEl.textContent = view.count; typingEl.textContent = view.typingLine(); ... };
//
//   const typing = new TypingSignals({ send: (on) => fetch(`/api/discussions/${id}/typing`,
//       { method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ typing: on }) }) });
//   textarea.addEventListener('input', () => typing.keystroke());  // and typing.posted() after a post
//
// Over a WebSocket, `send` is `(on) => ws.send(JSON.stringify({type: 'typing', discussion_id: id, typing: on}))`.

/** The aggregated typing line (FR-019): '', 'Alice is typing…', 'Alice and Bob are typing…',
 * '3 people are typing…'. `names` must already exclude the viewer. */
export function typingLine(names) {
  const sorted = [...names].sort((a, b) => a.localeCompare(b));
  if (sorted.length === 0) return '';
  if (sorted.length === 1) return `${sorted[0]} is typing…`;
  if (sorted.length === 2) return `${sorted[0]} and ${sorted[1]} are typing…`;
  return `${sorted.length} people are typing…`;
}

const STATUS_ORDER = { online: 0, away: 1 };

/** Who is here and who is typing in one discussion, from the REST snapshot and the events. */
export class PresenceView {
  constructor({ selfId = null, onChange = () => {} } = {}) {
    this.selfId = selfId;
    this.onChange = onChange;
    this.participants = new Map(); // user id -> {id, name, status}
    this.typing = new Map(); // user id -> name
  }

  /** `GET /api/discussions/{id}/presence`: replaces everything known so far. */
  loadSnapshot(snapshot) {
    this.participants = new Map(snapshot.participants.map((p) => [p.id, { ...p }]));
    this.typing = new Map(snapshot.typing.map((t) => [t.id, t.name]));
    this.onChange(this);
  }

  /** An event envelope from any transport. Returns true when the display must change. */
  handleEvent(event) {
    const user = event.user;
    let changed = false;
    switch (event.type) {
      case 'user_joined':
      case 'presence_changed':
        this.participants.set(user.id, { id: user.id, name: user.name, status: event.payload.status || 'online' });
        changed = true;
        break;
      case 'user_left':
        changed = this.participants.delete(user.id);
        changed = this.typing.delete(user.id) || changed;
        break;
      case 'typing_started':
        this.typing.set(user.id, user.name);
        changed = true;
        break;
      case 'typing_stopped':
        changed = this.typing.delete(user.id);
        break;
      case 'response_posted': {
        // FR-021: the author's indicator goes with their post, whatever else arrives.
        const author = event.payload && event.payload.response && event.payload.response.author;
        if (author) changed = this.typing.delete(author.id);
        break;
      }
      case 'sync_required':
        // Presence is not replayed: the page refetches the snapshot along with the rest.
        break;
      default:
        return false;
    }
    if (changed) this.onChange(this);
    return changed;
  }

  /** Everyone connected, the viewer included (API.md `count`). */
  get count() {
    return this.participants.size;
  }

  /** Online first, then away; by name. */
  list() {
    return [...this.participants.values()].sort(
      (a, b) => (STATUS_ORDER[a.status] ?? 2) - (STATUS_ORDER[b.status] ?? 2) || a.name.localeCompare(b.name),
    );
  }

  typingLine() {
    const names = [];
    for (const [id, name] of this.typing) if (id !== this.selfId) names.push(name);
    return typingLine(names);
  }
}

/** Sends typing signals: at most one per `intervalMs` while keys are pressed (plus one trailing
 * signal, so the server's 5 s expiry counts from the last keystroke), and `typing: false` once
 * the user pauses for `idleMs`. The server throttles broadcasts on its own; this only spares
 * requests. */
export class TypingSignals {
  constructor({ send, intervalMs = 1000, idleMs = 5000, clock = () => Date.now(), timers = globalThis } = {}) {
    this.send = send;
    this.intervalMs = intervalMs;
    this.idleMs = idleMs;
    this.clock = clock;
    this.timers = timers;
    this.lastSent = -Infinity;
    this.pending = false;
    this.active = false;
    this.trailing = null;
    this.idle = null;
  }

  keystroke() {
    const now = this.clock();
    this.active = true;
    this.timers.clearTimeout(this.idle);
    this.idle = this.timers.setTimeout(() => this.stop(), this.idleMs);
    if (now - this.lastSent >= this.intervalMs) {
      this._send(true, now);
    } else if (!this.trailing) {
      this.pending = true;
      this.trailing = this.timers.setTimeout(() => {
        this.trailing = null;
        if (this.pending && this.active) this._send(true, this.clock());
      }, this.intervalMs - (now - this.lastSent));
    } else {
      this.pending = true;
    }
  }

  /** The user paused (or left the field): tell the server now. */
  stop() {
    this._clear();
    if (this.active) {
      this.active = false;
      this.send(false);
    }
  }

  /** A response was posted: the server already stopped the indicator; just reset. */
  posted() {
    this._clear();
    this.active = false;
  }

  _send(on, now) {
    this.lastSent = now;
    this.pending = false;
    this.send(on);
  }

  _clear() {
    this.timers.clearTimeout(this.idle);
    this.timers.clearTimeout(this.trailing);
    this.idle = null;
    this.trailing = null;
    this.pending = false;
  }
}

/** Page visibility and user activity -> `PUT /api/presence` (or a WebSocket `presence` message).
 * Hidden: away; visible: online. Any interaction re-asserts `online` at most every `activityMs`,
 * which is what keeps the stream from being closed as idle after 30 minutes (FR-035). */
export class ActivitySignals {
  constructor({ send, doc = globalThis.document, activityMs = 5 * 60_000, clock = () => Date.now() } = {}) {
    this.send = send;
    this.doc = doc;
    this.activityMs = activityMs;
    this.clock = clock;
    this.lastSent = -Infinity;
    this.status = null;
    this._onVisibility = () => this.update(this.doc.visibilityState === 'hidden' ? 'away' : 'online');
    this._onActivity = () => {
      if (this.doc.visibilityState !== 'hidden' && this.clock() - this.lastSent >= this.activityMs) {
        this.update('online', true);
      }
    };
  }

  start() {
    this.doc.addEventListener('visibilitychange', this._onVisibility);
    for (const type of ['keydown', 'pointerdown', 'scroll']) this.doc.addEventListener(type, this._onActivity, { passive: true });
    this._onVisibility();
  }

  stop() {
    this.doc.removeEventListener('visibilitychange', this._onVisibility);
    for (const type of ['keydown', 'pointerdown', 'scroll']) this.doc.removeEventListener(type, this._onActivity);
  }

  update(status, force = false) {
    if (status === this.status && !force) return;
    this.status = status;
    this.lastSent = this.clock();
    this.send(status, force);
  }
}
