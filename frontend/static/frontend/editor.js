// The judgment editor: one set of answers ranked, scored, flagged and explained. The workspace
// opens it on a leased task, and revise.js on a judgment already sent, filled with what was
// submitted; either way the editor holds what is being judged (the item: prompt, completions in
// the order shown, rubric, and the localStorage key of its draft) and the draft itself, draws
// them, counts active time, and builds the body that is sent.
"use strict";

import { $, $$, el, refillThread, renderThread, setStatus } from "./shared.js";
import { Ranking, ordinal } from "./ranking.js";
import { refillCards, renderCards, showRanks } from "./answers.js";
import { checklistText, clearAllErrors, clearFieldError, missing, showMissing, showServerErrors } from "./checks.js";
import { OUTCOME_FLAG, showOutcome } from "./outcome.js";

const root = document.getElementById("workspace");
const IDLE_MS = 60_000; // time counts while the page is seen and used within a minute

export let item = null; // {prompt, completions, rubric, draftKey}: what is being judged
let state = null; // {ranks, scores, strength, flags, none_acceptable, rationale, activeMs}: the draft
let ranking = null; // a Ranking over item.completions
let activeIndex = 0; // the answer arrows move from
let tieFor = null; // the answer whose next rank makes a tie, when armed
let lastInput = Date.now();
let lastTick = Date.now();

const letterOf = (id) => ranking.letter(id);
const cards = () => $$(".answer");

export const activeMs = () => (state ? state.activeMs || 0 : 0);
export const rankingGroups = () => ranking.groups();

// ---- drafts and active time ------------------------------------------------------------------

export function saveDraft() {
  if (item && item.draftKey) localStorage.setItem(item.draftKey, JSON.stringify({ ...state, ranks: ranking.toJSON() }));
}

// What is on screen was sent: it keeps no draft from now on (a revision opened before the next
// task arrives would otherwise save one for it).
export function retireDraft() {
  if (item) item = { ...item, draftKey: null };
}

export function restoreDraft(key) {
  try {
    return JSON.parse(localStorage.getItem(key) || "null");
  } catch {
    return null;
  }
}

// Add the time since the last tick if the page was visible and used within IDLE_MS of it.
export function countActiveTime() {
  const now = Date.now();
  if (item && document.visibilityState === "visible") {
    const until = Math.min(now, lastInput + IDLE_MS);
    if (until > lastTick) state.activeMs = (state.activeMs || 0) + (until - lastTick);
  }
  lastTick = now;
}

for (const kind of ["keydown", "pointerdown", "pointermove", "wheel", "scroll", "input"]) {
  document.addEventListener(kind, () => { lastInput = Date.now(); }, { passive: true, capture: true });
}
document.addEventListener("visibilitychange", () => { countActiveTime(); lastInput = Date.now(); });

// ---- ranking ----------------------------------------------------------------------------------

function rank(id, number, { tie = false } = {}) {
  if (number > item.completions.length) {
    setStatus(`Ranks go from 1 to ${item.completions.length} on this task.`, "warn");
    return;
  }
  const did = tie ? ranking.tie(id, number) : ranking.set(id, number);
  if (tieFor !== null) setStatus(tie && did ? `Answer ${letterOf(id)} now shares ${ordinal(number)}; u undoes it.` : "");
  tieFor = null;
  if (did) changed();
  else showRanks($("#cards"), ranking, tieFor);
}

function armTie(id) {
  tieFor = tieFor === id ? null : id;
  showRanks($("#cards"), ranking, tieFor);
  if (tieFor !== null) setStatus(`Tie: choose the rank answer ${letterOf(id)} should share (Esc cancels).`);
}

export function undo() {
  if (ranking.undo()) changed();
}

function changed() {
  saveDraft();
  renderBoard();
  renderStrength();
  showRanks($("#cards"), ranking, tieFor);
  $("#undo").disabled = !ranking.history.length;
  renderChecklist();
}

function chip(id) {
  const button = el("button", { type: "button", class: "chip", draggable: "true", dataset: { id }, "aria-label": `Answer ${letterOf(id)}`, text: letterOf(id) });
  button.addEventListener("dragstart", (event) => {
    event.dataTransfer.setData("text/plain", String(id));
    event.dataTransfer.effectAllowed = "move";
  });
  button.addEventListener("click", () => setActive(ranking.ids.indexOf(id), true));
  return button;
}

function dropTarget(node, onDrop) {
  node.addEventListener("dragover", (event) => { event.preventDefault(); node.classList.add("over"); });
  node.addEventListener("dragleave", () => node.classList.remove("over"));
  node.addEventListener("drop", (event) => {
    event.preventDefault();
    node.classList.remove("over");
    const id = Number(event.dataTransfer.getData("text/plain"));
    if (ranking.ids.includes(id) && onDrop(id)) changed();
  });
  return node;
}

// The board: a row per rank in use (a drop onto one makes a tie on purpose), thin gaps between
// rows to insert a rank of its own, a row for a new lower rank, and the unranked answers.
function renderBoard() {
  const board = $("#board");
  board.replaceChildren();
  ranking.rows().forEach(([number, ids], index) => {
    board.append(dropTarget(el("div", { class: "insert", dataset: { insert: index }, "aria-hidden": "true" }), (id) => ranking.insertBefore(id, index)));
    const row = el("div", { class: "rank-row", dataset: { rank: number } }, el("span", { class: "rank-label", text: ordinal(number) }));
    for (const id of ids) row.append(chip(id));
    if (ids.length > 1) row.append(el("span", { class: "tie", text: "tie" }));
    board.append(dropTarget(row, (id) => ranking.join(id, index)));
  });
  board.append(dropTarget(el("div", { class: "rank-row new" }, el("span", { class: "rank-label", text: "Drop here for a new, lower rank" })), (id) => ranking.insertBefore(id, ranking.rows().length)));
  const pool = el("div", { class: "pool" }, el("span", { class: "rank-label", text: "Unranked" }));
  for (const id of ranking.unranked) pool.append(chip(id));
  board.append(dropTarget(pool, (id) => ranking.set(id, 0)));
  $("#ranking-words").textContent = ranking.describe();
}

function renderStrength() {
  const groups = ranking.groups();
  const topIsSingle = groups.length > 1 && groups[0].length === 1;
  $("#strength").disabled = !topIsSingle;
  $("#strength-hint").textContent = topIsSingle
    ? `Here: answer ${letterOf(groups[0][0])} against answer${groups[1].length > 1 ? "s" : ""} ${groups[1].map(letterOf).join(" and ")}.`
    : "Rank one answer best, ahead of the others, to say how much better it is.";
  if (!topIsSingle) state.strength = "";
  const options = $("#strength-options");
  if (!options.childElementCount) {
    for (const label of item.rubric.strength_labels) {
      const id = `strength-${label.key}`;
      const input = el("input", { type: "radio", name: "strength", id, value: label.key });
      input.addEventListener("change", () => { state.strength = label.key; clearError("strength"); saveDraft(); renderChecklist(); });
      options.append(el("label", { for: id, class: "inline" }, input, el("span", { text: ` ${label.label}` })));
    }
  }
  for (const input of $$("input[name=strength]", options)) input.checked = input.value === state.strength;
}

// ---- the rest of the judgment -----------------------------------------------------------------

function renderGuidelines() {
  const box = $("#guidelines");
  const general = el("div", { class: "md" });
  general.innerHTML = item.rubric.guidelines_html; // sanitized on the server
  box.replaceChildren(general);
  for (const axis of item.rubric.axes) {
    const list = el("dl", { class: "scale" });
    for (let n = axis.min; n <= axis.max; n += 1) list.append(el("dt", { text: String(n) }), el("dd", { text: axis.guidelines[String(n)] }));
    box.append(el("h3", { text: `${axis.label}: ${axis.question}` }), list);
  }
  const strengths = el("dl", { class: "scale wide" });
  for (const label of item.rubric.strength_labels) strengths.append(el("dt", { text: label.label }), el("dd", { text: `margin ${label.margin}` }));
  box.append(el("h3", { text: "Strength: the best answer against the next one" }), strengths);
}

function renderFlags() {
  const options = $("#flag-options");
  options.replaceChildren();
  for (const flag of item.rubric.flags.filter((f) => f.key !== OUTCOME_FLAG)) { // the outcome says it
    const id = `flag-${flag.key}`;
    const input = el("input", { type: "checkbox", id, value: flag.key, checked: state.flags.includes(flag.key) });
    input.addEventListener("change", () => {
      state.flags = $$("input:checked", options).map((i) => i.value);
      saveDraft();
    });
    options.append(el("label", { for: id, class: "inline" }, input, el("span", { text: ` ${flag.label}` })));
  }
}

export function setActive(index, focus, { scroll = true } = {}) {
  const all = cards();
  if (!all.length) return;
  activeIndex = (index + all.length) % all.length;
  all.forEach((card, i) => card.classList.toggle("active", i === activeIndex));
  if (focus) all[activeIndex].focus({ preventScroll: !scroll });
}

function setScore(id, axis, value) {
  state.scores[id] = { ...(state.scores[id] || {}), [axis]: value };
  clearError(`scores.${id}.${axis}`);
  saveDraft();
  renderChecklist();
}

// Show `next` for judging, from `saved` (a draft, or a judgment's fields with `ranking` as
// groups) when given; keyboard users start on the first answer.
export function openEditor(next, saved) {
  item = next;
  const ids = item.completions.map((c) => c.id);
  state = { scores: {}, strength: "", flags: [], none_acceptable: false, rationale: "", activeMs: 0, ...(saved || {}) };
  ranking = saved && saved.ranking && !saved.ranks ? Ranking.fromGroups(ids, saved.ranking) : new Ranking(ids, state.ranks);
  delete state.ranking;
  tieFor = null;
  activeIndex = 0;
  $("#task").hidden = false;
  $("#action-bar").hidden = false;
  $("#safety").hidden = !item.prompt.safety;
  renderThread($("#thread"), item.prompt.messages);
  const tap = (id, number) => rank(id, number, { tie: tieFor === id && number > 0 });
  renderCards($("#cards"), item, state, { rank: tap, armTie, score: setScore, focus: (i) => setActive(i, false) });
  $("#strength-options").replaceChildren();
  $("#rationale").value = state.rationale;
  renderFlags();
  showOutcome(root, state, () => { clearError("none_acceptable"); saveDraft(); renderChecklist(); });
  renderGuidelines();
  clearErrors();
  changed();
  $("#undo").disabled = true;
  lastTick = Date.now();
  window.scrollTo(0, 0); // a new task starts at its conversation
  setActive(0, true, { scroll: false });
}

export function closeEditor() {
  item = null;
  $("#task").hidden = true;
  $("#action-bar").hidden = true;
}

export function refillTexts() {
  if (!item) return;
  refillThread($("#thread"));
  refillCards($("#cards"), item);
}

// ---- what is still missing, and what is sent ---------------------------------------------------

function renderChecklist() {
  const m = missing(item, ranking, state);
  $("#checklist").textContent = checklistText(item, m, state);
  const banner = $("#banner");
  if (!banner.hidden) {
    const still = m.text();
    banner.textContent = still ? `Still missing: ${still}.` : "Everything is there: submit when you are ready.";
  }
}

const clearError = (path) => clearFieldError(root, path);
const clearErrors = () => clearAllErrors(root);
export const showErrors = (fields, detail) => showServerErrors(root, fields, detail);

// True when the judgment is complete; otherwise the fields that lack something are marked.
export function readyToSend() {
  state.rationale = $("#rationale").value;
  const m = missing(item, ranking, state);
  if (!m.text()) return true;
  showMissing(root, m, state);
  return false;
}

export function body() {
  countActiveTime();
  return {
    ranking: ranking.groups(),
    scores: Object.fromEntries(item.completions.map((c) => [String(c.id), state.scores[c.id] || {}])),
    strength: state.strength,
    flags: state.flags,
    none_acceptable: Boolean(state.none_acceptable),
    rationale: $("#rationale").value,
    time_spent_ms: Math.round(state.activeMs || 0),
  };
}

// ---- keyboard -----------------------------------------------------------------------------------

// The editor's keys: ranks, ties, undo, scores and moving between answers. True when the key
// was the editor's (the caller then stops its default).
export function editorKey(event) {
  const target = event.target;
  const digit = /^[0-9]$/.test(event.key) ? Number(event.key) : null;
  const card = target.closest(".answer");
  if (digit !== null && target.matches("input[type=radio][name^=score-]")) {
    // On a score: the digit is the score.
    const option = $(`#${CSS.escape(`${target.name}-${digit}`)}`);
    if (option) { option.checked = true; option.dispatchEvent(new Event("change")); option.focus(); }
    return true;
  }
  if (digit !== null || event.key === "t") {
    // Ranks only from an answer card (or its rank buttons): a digit typed anywhere else, on a
    // strength option or a flag say, must not re-rank an answer.
    if (!card || target.matches("input")) return false;
    const id = Number(card.dataset.id);
    if (event.key === "t") armTie(id);
    else rank(id, digit, { tie: tieFor === id && digit > 0 });
    return true;
  }
  if (event.key === "Escape" && tieFor !== null) { tieFor = null; showRanks($("#cards"), ranking, tieFor); setStatus("Tie cancelled."); return true; }
  if (event.key === "u" && !target.matches("input")) { undo(); return true; }
  if (target.matches("input[type=radio]")) return false; // arrows move within a radio group
  if (["ArrowRight", "ArrowDown", "j"].includes(event.key)) { setActive(activeIndex + 1, true); return true; }
  if (["ArrowLeft", "ArrowUp", "k"].includes(event.key)) { setActive(activeIndex - 1, true); return true; }
  return false;
}

$("#undo").addEventListener("click", undo);
$("#rationale").addEventListener("input", () => { if (item) { state.rationale = $("#rationale").value; saveDraft(); } });
