// The annotator's workspace: lease a task, rank and rate its answers, submit, go on.
//
// Everything goes through the JSON API, with the session cookie and the CSRF token. Work in
// progress is kept in localStorage per assignment (a draft), so a reload or a dropped connection
// loses nothing; a submission is written to an outbox before it is sent and retried with the
// same body until the server answers, and the server stores one judgment per assignment.
"use strict";

import { $, $$, api, el, markdownSwitch, refillThread, renderThread, wait } from "./shared.js";
import { Ranking, ordinal } from "./ranking.js";
import { refillCards, renderCards, showRanks } from "./answers.js";
import { checklistText, clearAllErrors, clearFieldError, missing, showMissing, showServerErrors } from "./checks.js";
import { OUTCOME_FLAG, showOutcome } from "./outcome.js";

const root = document.getElementById("workspace");
const OUTBOX = "feedback-loop.outbox";
const IDLE_MS = 60_000; // time on task counts while the page is seen and used within a minute
const draftKey = (assignment) => `feedback-loop.draft.${assignment}`;
const urls = {
  next: root.dataset.nextUrl,
  stats: root.dataset.statsUrl,
  submit: (id) => `/api/v1/assignments/${id}/submit/`,
  skip: (id) => `/api/v1/assignments/${id}/skip/`,
};

let task = null; // the leased task as the API returned it
let state = null; // {ranks, scores, strength, flags, rationale, activeMs}: the draft
let ranking = null; // a Ranking over task.completions
let activeIndex = 0; // the answer arrows move from
let tieFor = null; // the answer whose next rank makes a tie, when armed
let ticker = null;
let busy = false;
let lastInput = Date.now();
let lastTick = Date.now();

const letterOf = (id) => ranking.letter(id);
const cards = () => $$(".answer");

function setStatus(message, kind = "info") {
  const status = $("#status");
  status.textContent = message;
  status.dataset.kind = kind;
}

// Send until the server answers: a network error or a 5xx is retried with the same body,
// with a growing pause. The server treats the same body twice as one submission.
async function sendUntilAnswered(url, body) {
  let pause = 400;
  for (let attempt = 1; ; attempt += 1) {
    try {
      const response = await api(url, { method: "POST", body });
      if (response.status < 500) return response;
    } catch {
      // fetch failed: offline, connection reset, or the response was lost on the way.
    }
    setStatus(`Connection problem; your work is kept and will be sent again (try ${attempt})…`, "warn");
    await wait(pause);
    pause = Math.min(pause * 2, 8000);
  }
}

// ---- drafts and active time ------------------------------------------------------------------

function saveDraft() {
  if (task) localStorage.setItem(draftKey(task.assignment), JSON.stringify({ ...state, ranks: ranking.toJSON() }));
}

function restoreDraft(assignment) {
  try {
    return JSON.parse(localStorage.getItem(draftKey(assignment)) || "null");
  } catch {
    return null;
  }
}

// Add the time since the last tick if the page was visible and used within IDLE_MS of it.
function countActiveTime() {
  const now = Date.now();
  if (task && document.visibilityState === "visible") {
    const until = Math.min(now, lastInput + IDLE_MS);
    if (until > lastTick) state.activeMs = (state.activeMs || 0) + (until - lastTick);
  }
  lastTick = now;
}

const clock = (ms) => `${Math.floor(ms / 60000)}:${String(Math.floor(ms / 1000) % 60).padStart(2, "0")}`;

// ---- ranking ----------------------------------------------------------------------------------

function rank(id, number, { tie = false } = {}) {
  if (number > task.completions.length) {
    setStatus(`Ranks go from 1 to ${task.completions.length} on this task.`, "warn");
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
    for (const label of task.rubric.strength_labels) {
      const id = `strength-${label.key}`;
      const input = el("input", { type: "radio", name: "strength", id, value: label.key });
      input.addEventListener("change", () => { state.strength = label.key; clearError("strength"); saveDraft(); renderChecklist(); });
      options.append(el("label", { for: id, class: "inline" }, input, el("span", { text: ` ${label.label}` })));
    }
  }
  for (const input of $$("input[name=strength]", options)) input.checked = input.value === state.strength;
}

// ---- the rest of the task ---------------------------------------------------------------------

function renderGuidelines() {
  const box = $("#guidelines");
  const general = el("div", { class: "md" });
  general.innerHTML = task.rubric.guidelines_html; // sanitized on the server
  box.replaceChildren(general);
  for (const axis of task.rubric.axes) {
    const list = el("dl", { class: "scale" });
    for (let n = axis.min; n <= axis.max; n += 1) list.append(el("dt", { text: String(n) }), el("dd", { text: axis.guidelines[String(n)] }));
    box.append(el("h3", { text: `${axis.label}: ${axis.question}` }), list);
  }
  const strengths = el("dl", { class: "scale wide" });
  for (const label of task.rubric.strength_labels) strengths.append(el("dt", { text: label.label }), el("dd", { text: `margin ${label.margin}` }));
  box.append(el("h3", { text: "Strength: the best answer against the next one" }), strengths);
}

function renderFlags() {
  const options = $("#flag-options");
  options.replaceChildren();
  for (const flag of task.rubric.flags.filter((f) => f.key !== OUTCOME_FLAG)) { // the outcome says it
    const id = `flag-${flag.key}`;
    const input = el("input", { type: "checkbox", id, value: flag.key, checked: state.flags.includes(flag.key) });
    input.addEventListener("change", () => {
      state.flags = $$("input:checked", options).map((i) => i.value);
      saveDraft();
    });
    options.append(el("label", { for: id, class: "inline" }, input, el("span", { text: ` ${flag.label}` })));
  }
}

function setActive(index, focus, { scroll = true } = {}) {
  const all = cards();
  if (!all.length) return;
  activeIndex = (index + all.length) % all.length;
  all.forEach((card, i) => card.classList.toggle("active", i === activeIndex));
  if (focus) all[activeIndex].focus({ preventScroll: !scroll });
}

function tick() {
  countActiveTime();
  const left = Math.max(0, Math.round((Date.parse(task.lease_expires_at) - Date.now()) / 1000));
  const lease = $("#lease");
  lease.textContent = left > 0
    ? `Lease: ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")} left · this task ${clock(state.activeMs || 0)} active`
    : "Lease expired: you can still submit while nobody else has taken the slot.";
  lease.classList.toggle("expiring", left < 120);
}

function showTask(leased) {
  task = leased;
  const ids = task.completions.map((c) => c.id);
  const draft = restoreDraft(task.assignment);
  state = { scores: {}, strength: "", flags: [], none_acceptable: false, rationale: "", activeMs: 0, ...(draft || {}) };
  ranking = draft && draft.ranking && !draft.ranks ? Ranking.fromGroups(ids, draft.ranking) : new Ranking(ids, state.ranks);
  delete state.ranking;
  tieFor = null;
  activeIndex = 0;
  $("#empty").hidden = true;
  $("#task").hidden = false;
  $("#action-bar").hidden = false;
  $("#safety").hidden = !task.prompt.safety;
  renderThread($("#thread"), task.prompt.messages);
  const tap = (id, number) => rank(id, number, { tie: tieFor === id && number > 0 });
  renderCards($("#cards"), task, state, { rank: tap, armTie, score: setScore, focus: (i) => setActive(i, false) });
  $("#strength-options").replaceChildren();
  $("#rationale").value = state.rationale;
  renderFlags();
  showOutcome(root, state, () => { clearError("none_acceptable"); saveDraft(); renderChecklist(); });
  renderGuidelines();
  clearErrors();
  changed();
  $("#undo").disabled = true;
  clearInterval(ticker);
  lastTick = Date.now();
  tick();
  ticker = setInterval(tick, 1000);
  window.scrollTo(0, 0); // a new task starts at its conversation
  setActive(0, true, { scroll: false }); // keyboard users start on the first answer
}

function setScore(id, axis, value) {
  state.scores[id] = { ...(state.scores[id] || {}), [axis]: value };
  clearError(`scores.${id}.${axis}`);
  saveDraft();
  renderChecklist();
}

function showEmpty() {
  task = null;
  clearInterval(ticker);
  $("#lease").textContent = "";
  $("#task").hidden = true;
  $("#action-bar").hidden = true;
  $("#empty").hidden = false;
}

// ---- what is still missing ------------------------------------------------------------------

function renderChecklist() {
  const m = missing(task, ranking, state);
  $("#checklist").textContent = checklistText(task, m, state);
  const banner = $("#banner");
  if (!banner.hidden) {
    const still = m.text();
    banner.textContent = still ? `Still missing: ${still}.` : "Everything is there: submit when you are ready.";
  }
}

const clearError = (path) => clearFieldError(root, path);
const clearErrors = () => clearAllErrors(root);
const showErrors = (fields, detail) => showServerErrors(root, fields, detail);

// ---- submit and skip --------------------------------------------------------------------------

function body() {
  countActiveTime();
  return {
    ranking: ranking.groups(),
    scores: Object.fromEntries(task.completions.map((c) => [String(c.id), state.scores[c.id] || {}])),
    strength: state.strength,
    flags: state.flags,
    none_acceptable: Boolean(state.none_acceptable),
    rationale: $("#rationale").value,
    time_spent_ms: Math.round(state.activeMs || 0),
  };
}

async function submit() {
  if (!task || busy) return;
  state.rationale = $("#rationale").value;
  const m = missing(task, ranking, state);
  if (m.text()) {
    showMissing(root, m, state);
    setStatus("Not submitted yet: the bar at the bottom says what is missing.", "warn");
    return;
  }
  const payload = body();
  localStorage.setItem(OUTBOX, JSON.stringify({ assignment: task.assignment, body: payload }));
  await deliver(task.assignment, payload);
}

async function deliver(assignment, payload) {
  busy = true;
  $("#submit").disabled = true;
  setStatus("Sending…");
  try {
    const response = await sendUntilAnswered(urls.submit(assignment), payload);
    localStorage.removeItem(OUTBOX);
    if (response.ok) {
      localStorage.removeItem(draftKey(assignment));
      setStatus("Saved. Here is the next task.", "ok");
      await loadNext();
      return;
    }
    const error = await response.json().catch(() => ({}));
    if (response.status === 400) {
      showErrors(error.fields, error.detail);
      setStatus("The server did not accept this judgment; see the notes in red.", "warn");
    } else {
      localStorage.removeItem(draftKey(assignment));
      setStatus(`${error.detail || "This task can no longer be submitted."} Loading the next task.`, "warn");
      await loadNext();
    }
  } finally {
    busy = false;
    $("#submit").disabled = false;
  }
}

async function skip(reason) {
  const response = await sendUntilAnswered(urls.skip(task.assignment), { reason });
  if (response.ok || response.status === 409 || response.status === 404) {
    localStorage.removeItem(draftKey(task.assignment));
    toggleSkip(false);
    setStatus("Skipped.", "ok");
    await loadNext();
  } else {
    const error = await response.json().catch(() => ({}));
    showErrors(error.fields, error.detail);
  }
}

function toggleSkip(open) {
  $("#skip-form").hidden = !open;
  $("#skip-open").setAttribute("aria-expanded", String(open));
  if (open) $(".skip-presets button").focus();
}

// ---- loading ----------------------------------------------------------------------------------

async function loadNext() {
  const pending = JSON.parse(localStorage.getItem(OUTBOX) || "null");
  if (pending) {
    // A submission that never got an answer (a reload during an outage): finish it first.
    await deliver(pending.assignment, pending.body);
    return;
  }
  let response;
  try {
    response = await api(urls.next, { method: "POST" });
  } catch {
    setStatus("Cannot reach the server. Check your connection; nothing you did is lost.", "warn");
    return;
  }
  if (response.status === 204) showEmpty();
  else if (response.ok) showTask(await response.json());
  else setStatus(`Could not load a task (${response.status}).`, "warn");
  await loadStats();
}

async function loadStats() {
  try {
    const response = await api(task ? `${urls.stats}?round=${task.round}` : urls.stats);
    if (!response.ok) return;
    const stats = await response.json();
    const round = stats.round;
    $("#progress").textContent = round
      ? `Round ${round.number} · task ${Math.min(round.judged + round.skipped + 1, round.tasks)} of ${round.tasks} · ${round.skipped} skipped`
      : "No task in hand.";
    const mean = stats.mean_time_spent_ms ? `${Math.round(stats.mean_time_spent_ms / 1000)} s of active time per task` : "no timing yet";
    $("#stats").textContent = `Today: ${stats.judgments_today} · Total: ${stats.judgments_total} · ${mean} · Skipped: ${stats.skipped}`;
  } catch {
    // Progress is a courtesy; the workspace works without it.
  }
}

// ---- keyboard and controls --------------------------------------------------------------------

function toggle(buttonId, panelId, force) {
  const panel = $(panelId);
  panel.hidden = force === undefined ? !panel.hidden : !force;
  $(buttonId).setAttribute("aria-expanded", String(!panel.hidden));
  return !panel.hidden;
}

const toggleHelp = (force) => toggle("#help-toggle", "#shortcuts", force);
// The guidelines open beside the task, in view wherever the page is scrolled; remembered.
function toggleGuidelines(force, { focus = true } = {}) {
  const open = toggle("#guidelines-toggle", "#guidelines-panel", force);
  localStorage.setItem("feedback-loop.guidelines", open ? "1" : "0");
  document.body.classList.toggle("with-panel", open);
  if (open && focus) $("#guidelines-close").focus();
}

function onKey(event) {
  lastInput = Date.now();
  if (!task) return;
  const target = event.target;
  if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
    event.preventDefault();
    submit();
    return;
  }
  if (target.matches("textarea, input[type=text], select") || event.altKey || event.ctrlKey || event.metaKey) return;
  const digit = /^[0-9]$/.test(event.key) ? Number(event.key) : null;
  const card = target.closest(".answer");
  if (digit !== null && target.matches("input[type=radio][name^=score-]")) {
    // On a score: the digit is the score.
    const option = $(`#${CSS.escape(`${target.name}-${digit}`)}`);
    if (option) { option.checked = true; option.dispatchEvent(new Event("change")); option.focus(); }
    event.preventDefault();
    return;
  }
  if (digit !== null || event.key === "t") {
    // Ranks only from an answer card (or its rank buttons): a digit typed anywhere else, on a
    // strength option or a flag say, must not re-rank an answer.
    if (!card || target.matches("input")) return;
    const id = Number(card.dataset.id);
    if (event.key === "t") armTie(id);
    else rank(id, digit, { tie: tieFor === id && digit > 0 });
    event.preventDefault();
    return;
  }
  if (event.key === "Escape" && tieFor !== null) { tieFor = null; showRanks($("#cards"), ranking, tieFor); setStatus("Tie cancelled."); return; }
  if (event.key === "u" && !target.matches("input")) { if (ranking.undo()) changed(); event.preventDefault(); return; }
  if (target.matches("input[type=radio]")) return; // arrows move within a radio group
  if (["ArrowRight", "ArrowDown", "j"].includes(event.key)) { setActive(activeIndex + 1, true); event.preventDefault(); }
  else if (["ArrowLeft", "ArrowUp", "k"].includes(event.key)) { setActive(activeIndex - 1, true); event.preventDefault(); }
  else if (event.key === "s") { toggleSkip(true); event.preventDefault(); }
  else if (event.key === "g") { toggleGuidelines(); event.preventDefault(); }
  else if (event.key === "?") { toggleHelp(); event.preventDefault(); }
}

document.addEventListener("keydown", onKey);
for (const kind of ["pointerdown", "pointermove", "wheel", "scroll", "input"]) {
  document.addEventListener(kind, () => { lastInput = Date.now(); }, { passive: true, capture: true });
}
document.addEventListener("visibilitychange", () => { countActiveTime(); lastInput = Date.now(); });
$("#help-toggle").addEventListener("click", () => toggleHelp());
$("#guidelines-toggle").addEventListener("click", () => toggleGuidelines());
$("#guidelines-close").addEventListener("click", () => { toggleGuidelines(false); $("#guidelines-toggle").focus(); });
$("#undo").addEventListener("click", () => { if (ranking.undo()) changed(); });
$("#submit").addEventListener("click", submit);
$("#skip-open").addEventListener("click", () => toggleSkip($("#skip-form").hidden));
$("#skip-cancel").addEventListener("click", () => toggleSkip(false));
for (const preset of $$(".skip-presets button")) preset.addEventListener("click", () => skip(preset.dataset.reason));
$("#skip-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const reason = $("#skip-reason").value.trim();
  if (!reason) {
    $('[data-error-for="reason"]').textContent = "Say why you skip this task: choose a reason above or write one.";
    $("#skip-reason").setAttribute("aria-invalid", "true");
    $("#skip-reason").focus();
    return;
  }
  skip(reason);
});
$("#rationale").addEventListener("input", () => { state.rationale = $("#rationale").value; saveDraft(); });
$("#check-again").addEventListener("click", loadNext);
markdownSwitch($("#markdown-toggle"), () => { if (task) { refillThread($("#thread")); refillCards($("#cards"), task); } });
window.addEventListener("online", () => setStatus("Back online.", "ok"));
if (localStorage.getItem("feedback-loop.guidelines") === "1") toggleGuidelines(true, { focus: false });

loadNext();
