// Run by tests/test_beacons_js.py with Node: static/beacons.js's queue, pacing and the
// reconnection and first-event reports it derives from a client's status events.
import assert from 'node:assert/strict';

const stored = new Map();
globalThis.sessionStorage = {
  getItem: (key) => (stored.has(key) ? stored.get(key) : null),
  setItem: (key, value) => stored.set(key, String(value)),
  removeItem: (key) => stored.delete(key),
};
const { Beacons } = await import('../../static/beacons.js');

let now = 0;
const sent = [];
const beacons = new Beacons({ send: (batch) => sent.push(batch), now: () => now });

// At most 50 queued: the oldest go first.
for (let i = 0; i < 60; i++) beacons.record('first_event', { seconds: i });
assert.equal(beacons.queue.length, 50);
assert.equal(beacons.queue[0].seconds, 10);
now = 10_000;
beacons.flush();
assert.equal(sent.length, 1);
assert.equal(sent[0].length, 50);
// Not again within 5 s, unless the page is leaving.
beacons.record('push_click');
now = 12_000;
beacons.flush();
assert.equal(sent.length, 1);
beacons.flush({ leaving: true });
assert.equal(sent.length, 2);
assert.deepEqual(sent[1], [{ kind: 'push_click' }]);
beacons.flush({ leaving: true }); // nothing queued: nothing sent
assert.equal(sent.length, 2);

const client = new EventTarget();
const status = (detail) => client.dispatchEvent(new CustomEvent('status', { detail }));
beacons.watch(client);
status({ state: 'connecting', attempt: 0 });
status({ state: 'reconnecting', attempt: 1 }); // before the first connection: not a loss
assert.equal(stored.size, 0);
now = 20_000;
status({ state: 'connected', attempt: 0 });
client.dispatchEvent(new CustomEvent('event', { detail: {} }));
client.dispatchEvent(new CustomEvent('event', { detail: {} }));
assert.deepEqual(beacons.queue, [{ kind: 'first_event', seconds: 20 }]);
beacons.queue.length = 0;

now = 30_000;
status({ state: 'reconnecting', attempt: 1 });
assert.equal(sessionStorage.getItem('parley.connection-lost'), '1');
now = 31_000;
status({ state: 'reconnecting', attempt: 2 });
now = 32_500;
status({ state: 'connected', attempt: 0 });
assert.deepEqual(beacons.queue, [{ kind: 'reconnected', seconds: 2.5, attempts: 2 }]);
assert.equal(sessionStorage.getItem('parley.connection-lost'), null);
beacons.queue.length = 0;

// Giving up is reported once, and the loss stays noted for the reload that follows.
status({ state: 'offline', attempt: 0 });
status({ state: 'reconnecting', attempt: 10 });
status({ state: 'failed', attempt: 10 });
status({ state: 'failed', attempt: 10 });
assert.deepEqual(beacons.queue, [{ kind: 'reconnect_failed', attempts: 10 }]);
assert.equal(sessionStorage.getItem('parley.connection-lost'), '1');
console.log('ok');
