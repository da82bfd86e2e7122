// The common ground panel (FR-012..016, User Story 3): a dependency-free ES module.
//
//   import { CommonGroundPanel } from "/static/common_ground.js";
//   const panel = new CommonGroundPanel(document.querySelector("#common-ground"), { onStance });
//   panel.show(await (await fetch(`/api/discussions/${id}/analysis`)).json());  // on open, after sync
//   panel.refreshing(envelope.payload.version);                              // analysis_refreshing
//   panel.offer(envelope.payload);                                           // analysis_updated
//
// The panel owns its DOM. Each proposition is one element, keyed by its id, made once and then
// only updated: a new analysis tweens the counts and the agreement from their old values to the
// new ones and lets CSS transition the bars' widths, so the numbers move into place instead of the
// panel being redrawn (FR-015). New propositions are added; none is ever removed (propositions are
// never deleted, and a stale document must not make one vanish).
//
// FR-016: while the reader interacts with the panel (pointer over it, focus inside it, or a
// scroll inside it in the last RECENT_SCROLL_MS), an update is held behind an
// "Analysis updated — show" pill. Clicking the pill applies the latest held update; so does the
// end of the interaction (pointer out, focus out and no scroll for RECENT_SCROLL_MS), so the panel
// never stays stale once the reader has moved on. Only the newest held document is kept.

const TWEEN_MS = 900;
const RECENT_SCROLL_MS = 2000;
const REFRESHING_MAX_MS = 30_000; // the mark goes by itself if no update follows (FR-012's bound)

const STANCES = ["agree", "disagree", "pass"];
const STANCE_LABEL = { agree: "Agree", disagree: "Disagree", pass: "Pass" };

const easeOutCubic = (t) => 1 - (1 - t) ** 3;
const reducedMotion = () => matchMedia("(prefers-reduced-motion: reduce)").matches;

function percent(agreement) {
  return agreement == null ? null : Math.round(agreement * 1000) / 10;
}

/** One number shown in the panel; `set` tweens from what is shown now to the new value. */
class TweenedNumber {
  constructor(element, format = (value) => String(Math.round(value))) {
    this.element = element;
    this.format = format;
    this.value = null; // what is displayed now (null: nothing yet)
    this.frame = null;
  }

  set(target, animate) {
    cancelAnimationFrame(this.frame);
    const from = this.value;
    if (target == null || from == null || !animate || from === target || document.hidden || reducedMotion()) {
      this.show(target);
      return;
    }
    const start = performance.now();
    const step = (now) => {
      // A frame's timestamp is when the frame began, which can precede `start`: clamp at 0, or
      // the eased value would dip below `from` for a frame (seen as 0 -> -2 -> 40).
      const t = Math.max(0, Math.min(1, (now - start) / TWEEN_MS));
      this.show(t === 1 ? target : from + (target - from) * easeOutCubic(t));
      if (t < 1) this.frame = requestAnimationFrame(step);
    };
    this.frame = requestAnimationFrame(step);
  }

  show(value) {
    this.value = value;
    this.element.textContent = value == null ? "–" : this.format(value);
  }
}

export class CommonGroundPanel {
  /**
   * @param {HTMLElement} root the panel (see index.html `#common-ground`)
   * @param {object} options
   * @param {(stances: object) => void} [options.onStance] the stances drafted for the next response changed
   */
  constructor(root, { onStance = () => {} } = {}) {
    this.root = root;
    this.list = root.querySelector(".propositions");
    this.pill = root.querySelector(".cg-pill");
    this.mark = root.querySelector(".cg-refreshing");
    this.empty = root.querySelector(".cg-empty");
    this.onStance = onStance;
    this.items = new Map(); // proposition id -> {element, agree, disagree, pass, agreement, bar}
    this.version = -1; // of the analysis shown
    this.held = null; // the newest analysis waiting for the reader (FR-016)
    this.refreshingAfter = null; // the version a recomputation is replacing
    this.refreshingTimer = null;
    this.draft = new Map(); // proposition id -> stance, sent with the next response
    this.recorded = new Map(); // proposition id -> this reader's latest stance sent
    this.pointerInside = false;
    this.focusInside = false;
    this.lastScroll = -Infinity;
    this.releaseTimer = null;
    this.participants = new TweenedNumber(root.querySelector(".cg-participants"));
    this.commonCount = root.querySelector(".cg-common-count");
    this.divisiveCount = root.querySelector(".cg-divisive-count");
    this.watchInteraction();
    this.pill.addEventListener("click", () => this.applyHeld());
  }

  // --- what the page calls ---------------------------------------------------------------------

  /** Show an analysis now (the REST read on open): no hold, no animation for a first fill. */
  show(analysis) {
    if (!analysis || analysis.version <= this.version) return;
    this.apply(analysis, this.version >= 0);
  }

  /** A new analysis (analysis_updated, or a refetch after sync_required): applied with the
   * animation, or held behind the pill while the reader interacts with the panel. */
  offer(analysis) {
    if (!analysis || analysis.version <= this.version) return;
    if (this.refreshingAfter != null && analysis.version > this.refreshingAfter) this.stopRefreshing();
    if (this.interacting()) {
      if (!this.held || analysis.version > this.held.version) this.held = analysis;
      this.pill.hidden = false;
      this.scheduleRelease();
      return;
    }
    this.apply(analysis, true);
  }

  /** analysis_refreshing, whose `version` is the one being replaced: a quiet mark until a newer
   * version arrives (FR-013). */
  refreshing(version) {
    if (version != null && version < this.version) return; // already superseded
    this.refreshingAfter = version ?? this.version;
    this.mark.hidden = false;
    clearTimeout(this.refreshingTimer);
    this.refreshingTimer = setTimeout(() => this.stopRefreshing(), REFRESHING_MAX_MS);
  }

  /** A proposition just added by this reader: shown at once, counted by the next analysis. */
  addProposition(proposition) {
    if (this.items.has(proposition.id)) return;
    const item = this.item(proposition);
    item.element.classList.add("is-new");
    this.fill(item, { agree: 0, disagree: 0, pass: 0, agreement: null }, false);
    this.empty.hidden = true;
  }

  /** This reader's stances as sent (from their responses): shown on the stance buttons. */
  recordStances(stances) {
    for (const [id, stance] of Object.entries(stances || {})) this.recorded.set(id, stance);
    this.paintStances();
  }

  /** The stances to send with the next response ({} when none). */
  get draftStances() {
    return Object.fromEntries(this.draft);
  }

  /** After a response carried the draft: it is now what this reader holds. */
  clearDraft() {
    this.recordStances(this.draftStances);
    this.draft.clear();
    this.paintStances();
    this.onStance(this.draftStances);
  }

  // --- applying an analysis -------------------------------------------------------------------

  apply(analysis, animate) {
    this.version = analysis.version;
    this.held = null;
    this.pill.hidden = true;
    const common = new Set(analysis.common_ground || []);
    const divisive = new Set(analysis.divisive || []);
    for (const proposition of analysis.propositions || []) {
      let item = this.items.get(proposition.id);
      const fresh = !item;
      if (fresh) {
        item = this.item(proposition);
        if (animate) item.element.classList.add("is-new");
      }
      const kind = common.has(proposition.id) ? "common" : divisive.has(proposition.id) ? "divisive" : "";
      item.element.dataset.kind = kind;
      item.tag.textContent = kind === "common" ? "Common ground" : kind === "divisive" ? "Divisive" : "";
      item.tag.hidden = !kind;
      this.fill(item, proposition, animate && !fresh);
    }
    this.participants.set(analysis.participants ?? 0, animate);
    this.commonCount.textContent = String(common.size);
    this.divisiveCount.textContent = String(divisive.size);
    this.root.dataset.version = String(analysis.version);
    this.empty.hidden = this.items.size > 0;
  }

  fill(item, counts, animate) {
    item.agree.set(counts.agree ?? 0, animate);
    item.disagree.set(counts.disagree ?? 0, animate);
    item.pass.set(counts.pass ?? 0, animate);
    const share = percent(counts.agreement);
    item.agreement.set(share, animate);
    // The bar's width transitions in CSS; without agree/disagree votes it is empty and grey.
    item.bar.classList.toggle("unknown", share == null);
    if (!animate) item.bar.classList.add("instant");
    item.bar.style.setProperty("--agreement", `${share ?? 0}%`);
    item.meter.setAttribute("aria-valuenow", String(share ?? 0));
    item.meter.setAttribute("aria-valuetext", share == null ? "no stances yet" : `${share}% agree`);
    if (!animate) requestAnimationFrame(() => requestAnimationFrame(() => item.bar.classList.remove("instant")));
  }

  /** The element of one proposition, made once: text, tag, agreement bar, counts, stance buttons. */
  item(proposition) {
    const element = document.createElement("li");
    element.className = "proposition";
    element.dataset.id = proposition.id;
    const head = document.createElement("div");
    head.className = "proposition-head";
    const text = document.createElement("span");
    text.className = "proposition-text";
    text.textContent = proposition.text;
    const tag = document.createElement("span");
    tag.className = "proposition-tag";
    tag.hidden = true;
    head.append(text, tag);

    const meter = document.createElement("div");
    meter.className = "agreement-meter";
    meter.setAttribute("role", "meter");
    meter.setAttribute("aria-valuemin", "0");
    meter.setAttribute("aria-valuemax", "100");
    meter.setAttribute("aria-label", "Agreement");
    const bar = document.createElement("span");
    bar.className = "agreement-bar";
    meter.append(bar);

    const counts = document.createElement("div");
    counts.className = "proposition-counts";
    const number = (kind, label) => {
      const wrap = document.createElement("span");
      wrap.className = `count ${kind}`;
      const value = document.createElement("b");
      value.className = "value";
      wrap.append(value, ` ${label}`);
      counts.append(wrap);
      return new TweenedNumber(value);
    };
    const agree = number("agree", "agree");
    const disagree = number("disagree", "disagree");
    const pass = number("pass", "pass");
    const share = document.createElement("span");
    share.className = "agreement-value";
    counts.append(share);

    const stances = document.createElement("div");
    stances.className = "stance-picker";
    stances.setAttribute("role", "group");
    stances.setAttribute("aria-label", `Your stance on “${proposition.text}”`);
    for (const stance of STANCES) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = `stance ${stance}`;
      button.dataset.stance = stance;
      button.textContent = STANCE_LABEL[stance];
      button.setAttribute("aria-pressed", "false");
      button.addEventListener("click", () => this.pick(proposition.id, stance));
      stances.append(button);
    }

    element.append(head, meter, counts, stances);
    element.addEventListener("animationend", () => element.classList.remove("is-new"));
    this.list.append(element);
    const item = {
      element, tag, bar, meter, agree, disagree, pass,
      agreement: new TweenedNumber(share, (value) => `${Math.round(value)}%`),
    };
    this.items.set(proposition.id, item);
    this.paintStances();
    return item;
  }

  // --- stances -----------------------------------------------------------------------------

  pick(propositionId, stance) {
    if (this.draft.get(propositionId) === stance) this.draft.delete(propositionId);
    else this.draft.set(propositionId, stance);
    this.paintStances();
    this.onStance(this.draftStances);
  }

  paintStances() {
    for (const [id, item] of this.items) {
      const drafted = this.draft.get(id);
      const recorded = this.recorded.get(id);
      for (const button of item.element.querySelectorAll(".stance")) {
        button.setAttribute("aria-pressed", String(button.dataset.stance === drafted));
        button.classList.toggle("recorded", button.dataset.stance === recorded && !drafted);
      }
    }
  }

  // --- FR-016: hold updates while the reader interacts -------------------------------------

  watchInteraction() {
    const root = this.root;
    root.addEventListener("pointerenter", () => { this.pointerInside = true; });
    root.addEventListener("pointerleave", () => { this.pointerInside = false; this.scheduleRelease(); });
    root.addEventListener("focusin", () => { this.focusInside = true; });
    root.addEventListener("focusout", (event) => {
      this.focusInside = root.contains(event.relatedTarget);
      this.scheduleRelease();
    });
    // Scroll does not bubble: listen in the capture phase to see the list's own scrolling.
    root.addEventListener("scroll", () => { this.lastScroll = performance.now(); this.scheduleRelease(); },
      { capture: true, passive: true });
  }

  interacting() {
    return this.pointerInside || this.focusInside || performance.now() - this.lastScroll < RECENT_SCROLL_MS;
  }

  /** Apply the held update once the interaction has ended: pointer and focus out (their own
   * events call this again), and RECENT_SCROLL_MS after the last scroll. */
  scheduleRelease() {
    clearTimeout(this.releaseTimer);
    if (!this.held || this.pointerInside || this.focusInside) return;
    const wait = Math.max(0, RECENT_SCROLL_MS - (performance.now() - this.lastScroll)) + 300;
    this.releaseTimer = setTimeout(() => {
      if (this.held && !this.interacting()) this.applyHeld();
    }, wait);
  }

  applyHeld() {
    clearTimeout(this.releaseTimer);
    if (this.held) this.apply(this.held, true);
  }

  stopRefreshing() {
    clearTimeout(this.refreshingTimer);
    this.refreshingAfter = null;
    this.mark.hidden = true;
  }
}
