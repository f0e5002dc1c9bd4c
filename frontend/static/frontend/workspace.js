// The annotator's workspace: lease a task, rank and rate its answers (editor.js), submit, go on;
// or correct a judgment already sent (revise.js) and come back to the task in hand.
//
// Everything goes through the JSON API, with the session cookie and the CSRF token. Work in
// progress is kept in localStorage per assignment (a draft), so a reload or a dropped connection
// loses nothing; a submission goes through the outbox (delivery.js) and is retried with the
// same body until the server answers, and the server stores one judgment per assignment.
"use strict";

import { $, $$, api, markdownSwitch, setStatus } from "./shared.js";
import { activeMs, body, closeEditor, countActiveTime, editorKey, item, openEditor, readyToSend, refillTexts, restoreDraft, retireDraft, showErrors } from "./editor.js";
import { outbox, sendUntilAnswered } from "./delivery.js";
import { noteSubmitted, refreshRecent, resendRevision, revising, sendRevision, setupRevise, toggleRecent } from "./revise.js";

const root = document.getElementById("workspace");
const draftKey = (assignment) => `feedback-loop.draft.${assignment}`;
const urls = {
  next: root.dataset.nextUrl,
  stats: root.dataset.statsUrl,
  submit: (id) => `/api/v1/assignments/${id}/submit/`,
  skip: (id) => `/api/v1/assignments/${id}/skip/`,
};

let task = null; // the leased task as the API returned it, with the key of its draft
let busy = false; // a submit, or the task after it, is on its way: no second submit meanwhile
let sending = false; // a judgment is on its way to the server: no revision opens meanwhile

const clock = (ms) => `${Math.floor(ms / 60000)}:${String(Math.floor(ms / 1000) % 60).padStart(2, "0")}`;

// Every second: active time, and the lease of the task in hand (also while a revision is open).
function tick() {
  countActiveTime();
  const lease = $("#lease");
  if (!task) {
    lease.textContent = "";
    return;
  }
  const left = Math.max(0, Math.round((Date.parse(task.lease_expires_at) - Date.now()) / 1000));
  const what = revising() ? "this revision" : "this task";
  lease.textContent = left > 0
    ? `Lease: ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")} left · ${what} ${clock(activeMs())} active`
    : "Lease expired: you can still submit while nobody else has taken the slot.";
  lease.classList.toggle("expiring", left < 120);
}

function showTask(leased) {
  task = { ...leased, draftKey: draftKey(leased.assignment) };
  resumeTask();
}

// Back to the task in hand with its draft (after a revision, too), or to "no tasks".
function resumeTask() {
  if (!task && busy) {
    closeEditor(); // the task just judged is done, and the next one is on its way
    return;
  }
  if (!task) {
    showEmpty();
    return;
  }
  $("#empty").hidden = true;
  openEditor(task, restoreDraft(task.draftKey));
  tick();
}

function showEmpty() {
  task = null;
  closeEditor();
  tick();
  $("#empty").hidden = false;
}

// ---- submit and skip --------------------------------------------------------------------------

async function submit() {
  if (!task || busy || revising()) return;
  if (!readyToSend()) {
    setStatus("Not submitted yet: the bar at the bottom says what is missing.", "warn");
    return;
  }
  const payload = body();
  outbox.put({ assignment: task.assignment, body: payload });
  await deliver(task.assignment, payload);
}

async function deliver(assignment, payload) {
  busy = true;
  sending = true;
  $("#submit").disabled = true;
  setStatus("Sending…");
  try {
    const response = await sendUntilAnswered(urls.submit(assignment), payload).finally(() => { sending = false; });
    outbox.clear();
    if (response.ok) {
      done(assignment);
      const judgment = await response.json().catch(() => null);
      setStatus("Saved. Here is the next task.", "ok");
      noteSubmitted(judgment && judgment.id);
      await loadNext();
      return;
    }
    const error = await response.json().catch(() => ({}));
    if (response.status === 400) {
      showErrors(error.fields, error.detail);
      setStatus("The server did not accept this judgment; see the notes in red.", "warn");
    } else {
      done(assignment);
      setStatus(`${error.detail || "This task can no longer be submitted."} Loading the next task.`, "warn");
      await loadNext();
    }
  } finally {
    busy = false;
    $("#submit").disabled = false;
  }
}

// The task in hand is over (judged, or no longer to be judged). A revision may open while the
// next one loads, and comes back to that one.
function done(assignment) {
  localStorage.removeItem(draftKey(assignment));
  task = null;
  retireDraft();
}

async function skip(reason) {
  if (!task || busy) return;
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
  const pending = outbox.pending();
  if (pending && pending.judgment) {
    await resendRevision(pending); // a revision sent just before a reload: it goes first
  } else if (pending) {
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
  if (response.status === 204) {
    task = null;
    if (!revising()) showEmpty();
  } else if (response.ok) {
    const leased = await response.json();
    if (revising()) task = { ...leased, draftKey: draftKey(leased.assignment) }; // shown after it
    else showTask(leased);
  } else setStatus(`Could not load a task (${response.status}).`, "warn");
  await Promise.all([loadStats(), refreshRecent()]);
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
  const target = event.target;
  const plain = !(target.matches("textarea, input[type=text], select") || event.altKey || event.ctrlKey || event.metaKey);
  if (plain && event.key === "r" && !target.matches("input")) { toggleRecent(); event.preventDefault(); return; }
  if (!item) return;
  if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
    event.preventDefault();
    if (revising()) sendRevision();
    else submit();
    return;
  }
  if (!plain) return;
  if (editorKey(event)) { event.preventDefault(); return; }
  if (target.matches("input[type=radio]")) return;
  if (event.key === "s" && !revising()) { toggleSkip(true); event.preventDefault(); }
  else if (event.key === "g") { toggleGuidelines(); event.preventDefault(); }
  else if (event.key === "?") { toggleHelp(); event.preventDefault(); }
}

document.addEventListener("keydown", onKey);
$("#help-toggle").addEventListener("click", () => toggleHelp());
$("#guidelines-toggle").addEventListener("click", () => toggleGuidelines());
$("#guidelines-close").addEventListener("click", () => { toggleGuidelines(false); $("#guidelines-toggle").focus(); });
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
$("#check-again").addEventListener("click", loadNext);
markdownSwitch($("#markdown-toggle"), refillTexts);
window.addEventListener("online", () => setStatus("Back online.", "ok"));
if (localStorage.getItem("feedback-loop.guidelines") === "1") toggleGuidelines(true, { focus: false });
setupRevise({ resume: resumeTask, busy: () => sending, closeSkip: () => toggleSkip(false) });

setInterval(tick, 1000);
loadNext();
