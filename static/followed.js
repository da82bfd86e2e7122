// followed.js: the sidebar's "Your discussions" list, kept live by `activity` events (FR-008).
//
// The server sends one `activity` event per follower and followed discussion when something is
// posted there: `{discussion_id, title, unread_count, last_activity_at}` (API.md, Event types).
// The list keeps one item per discussion, newest activity first; an event updates the item's
// unread badge and moves it to its place, or adds the discussion if the list did not have it.
// The REST read on load (and every minute) stays the truth; events only keep it fresh between.

/** Sort key of an item: its last activity, RFC 3339 (so strings compare in time order). */
const activityOf = (item) => item.dataset.lastActivity || "";

export class FollowedList {
  /**
   * @param {HTMLElement} list the `<ul>` of discussions
   * @param {object} options
   * @param {(discussion: {id: string, title: string}, extra: {unread: number}) => HTMLElement} options.makeItem
   * @param {HTMLElement} [options.empty] shown while the list is empty
   */
  constructor(list, { makeItem, empty = null }) {
    this.list = list;
    this.makeItem = makeItem;
    this.empty = empty;
  }

  /** Replace every item (the REST read): `entries` of `{discussion, unread, lastActivityAt}`. */
  replace(entries) {
    const items = entries.map(({ discussion, unread, lastActivityAt }) => {
      const item = this.makeItem(discussion, { unread });
      item.dataset.lastActivity = lastActivityAt || "";
      return item;
    });
    // Stable sort: the server's order stands among items without a time.
    items.sort((a, b) => (activityOf(a) && activityOf(b) ? activityOf(b).localeCompare(activityOf(a)) : 0));
    this.list.replaceChildren(...items);
    this.showEmpty();
  }

  /** One `activity` event's payload. Returns the item it updated or added. */
  apply({ discussion_id: id, title, unread_count: unread = 0, last_activity_at: at = "" }) {
    if (typeof id !== "string" || !id) return null;
    let item = this.list.querySelector(`li[data-id="${CSS.escape(id)}"]`);
    if (item && at && activityOf(item) > at) return item; // an older update arriving late
    const fresh = this.makeItem({ id, title: title || item?.querySelector(".discussion-name")?.textContent || id }, { unread });
    fresh.dataset.lastActivity = at;
    if (item) item.replaceWith(fresh);
    item = fresh;
    this.place(item);
    item.classList.add("moved"); // style.css: a short highlight; removed when it ends
    item.addEventListener("animationend", () => item.classList.remove("moved"), { once: true });
    this.showEmpty();
    return item;
  }

  /** Move `item` to its place by last activity, newest first. */
  place(item) {
    const at = activityOf(item);
    let before = null;
    for (const other of this.list.children) {
      if (other !== item && activityOf(other) <= at) { before = other; break; }
    }
    this.list.insertBefore(item, before);
  }

  showEmpty() {
    if (this.empty) this.empty.hidden = this.list.children.length > 0;
  }
}
