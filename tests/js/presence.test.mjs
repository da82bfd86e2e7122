// Run by tests/test_presence_js.py with Node: the display rules of static/presence.js.
import assert from 'node:assert/strict';
import { PresenceView, TypingSignals, typingLine } from '../../static/presence.js';

assert.equal(typingLine([]), '');
assert.equal(typingLine(['Alice']), 'Alice is typing…');
assert.equal(typingLine(['Bob', 'Alice']), 'Alice and Bob are typing…');
assert.equal(typingLine(['Bob', 'Alice', 'Carol']), '3 people are typing…');

let renders = 0;
const view = new PresenceView({ selfId: 'me', onChange: () => renders++ });
view.loadSnapshot({
  count: 2,
  participants: [{ id: 'me', name: 'Me', status: 'online' }, { id: 'b', name: 'Bob', status: 'away' }],
  typing: [{ id: 'me', name: 'Me' }],
});
assert.equal(view.count, 2);
assert.equal(view.typingLine(), ''); // the viewer's own typing is not shown
const ev = (type, id, name, payload = {}) => ({ type, user: { id, name }, payload });
assert.equal(view.handleEvent(ev('user_joined', 'a', 'Alice', { status: 'online' })), true);
assert.deepEqual(view.list().map((p) => p.id), ['a', 'me', 'b']);
view.handleEvent(ev('typing_started', 'a', 'Alice'));
assert.equal(view.typingLine(), 'Alice is typing…');
view.handleEvent(ev('typing_started', 'b', 'Bob'));
assert.equal(view.typingLine(), 'Alice and Bob are typing…');
view.handleEvent(ev('typing_started', 'c', 'Carol'));
assert.equal(view.typingLine(), '3 people are typing…');
// Posting clears the author's indicator at once, even before typing_stopped.
view.handleEvent({ type: 'response_posted', user: { id: 'c', name: 'Carol' }, payload: { response: { author: { id: 'c' } } } });
assert.equal(view.typingLine(), 'Alice and Bob are typing…');
view.handleEvent(ev('typing_stopped', 'b', 'Bob'));
assert.equal(view.typingLine(), 'Alice is typing…');
view.handleEvent(ev('presence_changed', 'b', 'Bob', { status: 'online' }));
assert.deepEqual(view.list().map((p) => [p.id, p.status]), [['a', 'online'], ['b', 'online'], ['me', 'online']]);
view.handleEvent(ev('user_left', 'a', 'Alice', { status: 'offline' }));
assert.equal(view.count, 2);
assert.equal(view.typingLine(), '');
assert.equal(view.handleEvent(ev('response_edited', 'a', 'Alice')), false);
assert.ok(renders >= 8);

// TypingSignals with a fake clock and timers.
let now = 0;
const timers = [];
const fake = {
  setTimeout: (fn, ms) => { const t = { at: now + ms, fn, live: true }; timers.push(t); return t; },
  clearTimeout: (t) => { if (t) t.live = false; },
};
const advance = (ms) => {
  const end = now + ms;
  for (;;) {
    const next = timers.filter((t) => t.live && t.at <= end).sort((a, b) => a.at - b.at)[0];
    if (!next) break;
    now = next.at; next.live = false; next.fn();
  }
  now = end;
};
const sent = [];
const signals = new TypingSignals({ send: (on) => sent.push([now, on]), clock: () => now, timers: fake });
for (let i = 0; i < 25; i++) { signals.keystroke(); advance(100); } // 2.5 s of typing
assert.deepEqual(sent.map(([, on]) => on), [true, true, true]); // leading at 0, trailing at 1000 and 2000
assert.deepEqual(sent.map(([at]) => at), [0, 1000, 2000]);
advance(2500); // trailing signal for the keystrokes after 2000
assert.deepEqual(sent.at(-1), [3000, true]);
advance(5000); // 5 s after the last keystroke (2400): stop
assert.deepEqual(sent.at(-1), [7400, false]);
signals.keystroke();
signals.posted();
advance(10_000);
assert.deepEqual(sent.at(-1), [10_000, true]); // posted: no stop signal, the server did it
console.log('ok');
