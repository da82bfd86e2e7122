// Run by tests/test_tab_presence_js.py with Node: static/tab_presence.js's one status for all
// tabs (FR-009). Node's BroadcastChannel is the browser's: instances in one process talk.
import assert from 'node:assert/strict';
import { TabPresence } from '../../static/tab_presence.js';

const settle = () => new Promise((resolve) => setTimeout(resolve, 20));
let now = 1_000_000;
const clock = () => now;

/** A ParleyClient as TabPresence sees it: leader or not, a WebSocket that records messages. */
function client(tabId, isLeader) {
  const target = new EventTarget();
  target.tabId = tabId;
  target.isLeader = isLeader;
  target.sent = [];
  target.transport = { name: 'ws' };
  target.send = (message) => { target.sent.push(message.status); return true; };
  return target;
}

const leader = client('a', true);
const other = client('b', false);
const tabs = [new TabPresence(leader, { clock }), new TabPresence(other, { clock })];
for (const tab of tabs) tab.start();
tabs[0].set('online');
tabs[1].set('online');
await settle();
assert.deepEqual(leader.sent, ['online']);
assert.deepEqual(other.sent, []); // only the leader speaks

// One tab hidden: still online, nothing sent. Both hidden: away. One back: online.
tabs[1].set('away');
await settle();
assert.deepEqual(leader.sent, ['online']);
tabs[0].set('away');
await settle();
assert.deepEqual(leader.sent, ['online', 'away']);
tabs[1].set('online');
await settle();
assert.deepEqual(leader.sent, ['online', 'away', 'online']);

// Activity in any tab (force) is sent again while online: it keeps the session from idling.
tabs[1].set('online', true);
await settle();
assert.deepEqual(leader.sent, ['online', 'away', 'online', 'online']);

// A reconnection: the new connection starts online on the server, so the status goes again.
tabs[1].set('away');
await settle();
assert.deepEqual(leader.sent.at(-1), 'away');
const before = leader.sent.length;
leader.dispatchEvent(new CustomEvent('status', { detail: { state: 'connected' } }));
assert.deepEqual(leader.sent.slice(before), ['away']);

// A tab that stops saying anything (crashed) no longer counts after three repeat periods.
tabs[1].set('online');
await settle();
assert.equal(leader.sent.at(-1), 'online');
tabs[1].stop = () => {}; // it "crashes": no goodbye
clearInterval(tabs[1].timer);
tabs[1].channel.close();
now += 3 * 30_000 + 1;
tabs[0].set('away');
assert.equal(leader.sent.at(-1), 'away');

// A tab that closes says goodbye: its status goes with it.
const third = new TabPresence(client('c', false), { clock });
third.start();
third.set('online');
await settle();
assert.equal(leader.sent.at(-1), 'online');
third.stop();
await settle();
assert.equal(leader.sent.at(-1), 'away');

tabs[0].stop();
console.log('ok');
