// Correcting a judgment already sent, from the workspace (README: "Correcting a judgment").
//
// "Your recent judgments" lists the annotator's current judgments whose round is still open,
// each with a Revise button, and after a submit a button opens the judgment just sent. A
// revision opens in the same editor as a task, filled with what was submitted, the answers in
// the order they were shown, under the judgment's own rubric version; it is sent to
// POST /api/v1/judgments/{id}/revise/, through the outbox and retried like a submit (the server
// treats the same correction twice as one). Meanwhile the task in hand keeps its lease and its
// draft: Cancel, or a revision that was saved, goes back to it.
"use strict";

import { $, api, el, setStatus } from "./shared.js";
import { LETTERS } from "./ranking.js";
import { body, item, openEditor, rankingGroups, readyToSend, restoreDraft, saveDraft, showErrors } from "./editor.js";
import { outbox, sendUntilAnswered } from "./delivery.js";
import { OUTCOME_FLAG } from "./outcome.js";

const root = document.getElementById("workspace");
const urls = {
  mine: root.dataset.myJudgmentsUrl,
  rubrics: root.dataset.rubricsUrl,
  revise: (id) => `/api/v1/judgments/${id}/revise/`,
};
const RECENT_LIMIT = 20;
const TIME_SPENT_MAX_MS = 24 * 3600 * 1000; // the server's bound on time_spent_ms
const draftKey = (id) => `feedback-loop.revision.${id}`;

let current = null; // the judgment being revised, as GET /api/v1/me/judgments/ gives it
let lastSent = null; // the id of the judgment the annotator submitted last
let opener = null; // the button that opened the revision: the focus goes back to it on cancel
let sending = false;
let rubrics = null; // a promise of {label: rubric}, every version, loaded once
let hooks = { resume() {}, busy: () => false, closeSkip() {} };

export const revising = () => current !== null;

// ---- what a judgment looks like in the list --------------------------------------------------

const sentAt = (judgment) => new Date(judgment.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

function promptExcerpt(judgment) {
  const asked = judgment.prompt.messages.filter((m) => m.role === "user").at(-1) || judgment.prompt.messages.at(-1);
  const text = (asked ? asked.content : "").replace(/\s+/g, " ").trim();
  return text.length > 100 ? `${text.slice(0, 99)}…` : text;
}

// "B > A = C": the ranking as letters, in the order the answers were shown.
function rankingLetters(groups, completions) {
  const ids = completions.map((c) => c.id);
  return groups.map((group) => group.map((id) => LETTERS[ids.indexOf(id)]).join(" = ")).join(" > ");
}

function recentItem(judgment) {
  const summaryId = `recent-${judgment.id}`;
  const details = [`Round ${judgment.round}`, `sent ${sentAt(judgment)}`, `ranked ${rankingLetters(judgment.ranking, judgment.completions)}`];
  if (judgment.none_acceptable) details.push("none acceptable");
  if (judgment.supersedes) details.push("already revised once or more");
  const button = el(
    "button", { type: "button", class: "secondary", dataset: { judgment: judgment.id }, "aria-describedby": summaryId },
    "Revise", el("span", { class: "visually-hidden", text: ` your judgment of round ${judgment.round}, sent ${sentAt(judgment)}` }),
  );
  button.addEventListener("click", () => openRevision(judgment, button));
  const summary = el("div", { id: summaryId, class: "recent-summary" }, el("p", { class: "recent-prompt", text: promptExcerpt(judgment) }), el("p", { class: "hint", text: details.join(" · ") }));
  return el("li", { class: current && current.id === judgment.id ? "recent-item current" : "recent-item" }, summary, button);
}

// ---- the list -----------------------------------------------------------------------------------

async function loadRecent() {
  try {
    const response = await api(`${urls.mine}?limit=${RECENT_LIMIT}`);
    return response.ok ? (await response.json()).filter((judgment) => judgment.revisable) : null;
  } catch {
    return null;
  }
}

// Redraw the list if it is open (after a submit, a revision, a new task).
export async function refreshRecent() {
  if ($("#recent").hidden) return;
  const judgments = await loadRecent();
  const list = $("#recent-list");
  if (judgments === null) {
    $("#recent-empty").hidden = false;
    $("#recent-empty").textContent = "Could not load your recent judgments; try again in a moment.";
    return;
  }
  list.replaceChildren(...judgments.map(recentItem));
  $("#recent-empty").hidden = judgments.length > 0;
  $("#recent-empty").textContent = "Nothing to revise: the judgments you send are listed here while their round is open.";
}

export async function toggleRecent(force) {
  const panel = $("#recent");
  const hadFocus = panel.contains(document.activeElement);
  panel.hidden = force === undefined ? !panel.hidden : !force;
  if (panel.hidden && hadFocus) $("#recent-toggle").focus(); // not lost in a hidden list
  $("#recent-toggle").setAttribute("aria-expanded", String(!panel.hidden));
  await refreshRecent();
}

// After a submit: the judgment just sent, one click from a revision.
export function noteSubmitted(judgmentId) {
  lastSent = judgmentId || null;
  $("#revise-last").hidden = !lastSent;
}

async function reviseLast() {
  const judgments = await loadRecent();
  const judgment = (judgments || []).find((j) => j.id === lastSent);
  if (judgment) {
    await openRevision(judgment, $("#revise-last"));
    return;
  }
  noteSubmitted(null);
  setStatus("That judgment can no longer be revised (its round is closed, or it was revised since): see your recent judgments.", "warn");
  await toggleRecent(true);
  $("#recent-title").focus();
}

// ---- revising ---------------------------------------------------------------------------------

// Each rubric version by its label ("3H@2"): a judgment is revised under its own version.
async function rubricFor(label) {
  rubrics = rubrics || api(urls.rubrics)
    .then((response) => (response.ok ? response.json() : Promise.reject(new Error(String(response.status)))))
    .then((list) => Object.fromEntries(list.map((rubric) => [rubric.label, rubric])));
  try {
    return (await rubrics)[label] || null;
  } catch {
    rubrics = null; // try again next time
    return null;
  }
}

function showMode(on) {
  $("#revising").hidden = !on;
  $("#submit").hidden = on;
  $("#skip-open").hidden = on;
  $("#send-revision").hidden = !on;
  $("#cancel-revision").hidden = !on;
  $("#revise-last").hidden = on || !lastSent;
  if (on) {
    hooks.closeSkip();
    $("#cancel-revision").textContent = "Cancel revision";
    $("#empty").hidden = true;
    $("#revising-title").textContent = `Revising your judgment of round ${current.round}, sent ${sentAt(current)}`;
  }
}

async function openRevision(judgment, from) {
  if (hooks.busy() || sending) {
    setStatus("Wait a moment: a judgment is on its way to the server.", "warn");
    return;
  }
  const rubric = await rubricFor(judgment.rubric);
  if (!rubric) {
    setStatus("Could not load the rubric this judgment was made under; try again in a moment.", "warn");
    return;
  }
  saveDraft(); // the task's draft (or another revision's) as it is now, to come back to
  current = judgment;
  opener = from;
  const draft = restoreDraft(draftKey(judgment.id));
  // A copy: the editor changes its draft in place, and `current` must stay as it was sent.
  const sent = structuredClone({
    ranking: judgment.ranking, scores: judgment.scores, strength: judgment.strength, flags: judgment.flags,
    none_acceptable: judgment.none_acceptable, rationale: judgment.rationale, activeMs: 0,
  });
  showMode(true);
  openEditor({ prompt: judgment.prompt, completions: judgment.completions, rubric, draftKey: draftKey(judgment.id) }, draft || sent);
  setStatus(draft
    ? `Revising your judgment of round ${judgment.round}, with the changes you had not sent yet. Send the revision, or cancel to go back to your task.`
    : `Revising your judgment of round ${judgment.round}, as you sent it. Send the revision, or cancel to go back to your task.`);
  for (const node of document.querySelectorAll(".recent-item")) node.classList.toggle("current", node.contains(from));
}

// The fields a person changes, in one canonical form: ties in any order, scores by id.
function canonical(judgment) {
  const groups = judgment.ranking.map((group) => [...group].sort((a, b) => a - b));
  const scores = Object.entries(judgment.scores).map(([id, axes]) => [id, Object.entries(axes).sort()]).sort();
  const flags = judgment.flags.filter((flag) => flag !== OUTCOME_FLAG).sort(); // said by none_acceptable
  return JSON.stringify([groups, scores, judgment.strength, flags, Boolean(judgment.none_acceptable), judgment.rationale]);
}

export async function sendRevision() {
  if (!current || sending || $("#send-revision").hidden) return;
  if (!readyToSend()) {
    setStatus("Not sent yet: the bar at the bottom says what is missing.", "warn");
    return;
  }
  const spent = body();
  // The time on this judgment in all: the first go and every revision.
  const payload = { ...spent, time_spent_ms: Math.min(TIME_SPENT_MAX_MS, current.time_spent_ms + spent.time_spent_ms) };
  if (canonical(payload) === canonical(current)) {
    localStorage.removeItem(draftKey(current.id));
    await leave("Nothing changed, so nothing was sent: your judgment stays as it was.", "ok");
    return;
  }
  const pending = { judgment: current.id, round: current.round, body: payload };
  outbox.put(pending);
  await deliver(pending);
}

// Send `pending` ({judgment, round, body}); in the editor unless it is an outbox entry left by
// a reload, which is sent without one.
async function deliver(pending) {
  sending = true;
  $("#send-revision").disabled = true;
  setStatus("Sending your revision…");
  try {
    const response = await sendUntilAnswered(urls.revise(pending.judgment), pending.body);
    outbox.clear();
    const answer = await response.json().catch(() => ({}));
    if (response.ok) {
      localStorage.removeItem(draftKey(pending.judgment));
      if (lastSent === pending.judgment) lastSent = answer.id;
      const kept = "the version it replaces is kept as history";
      if (revising()) {
        const ranked = rankingLetters(rankingGroups(), item.completions);
        await leave(`Revision saved: your judgment of round ${pending.round} now ranks ${ranked}; ${kept}. Back to your task.`, "ok", { saved: true });
      } else setStatus(`Your revision of a judgment of round ${pending.round}, sent before the page was reloaded, is saved; ${kept}.`, "ok");
      return;
    }
    if (response.status === 400 && revising()) {
      showErrors(answer.fields, answer.detail);
      setStatus("The server did not accept this revision; see the notes in red.", "warn");
      return;
    }
    const reason = refusal(response.status, answer, pending);
    localStorage.removeItem(draftKey(pending.judgment));
    if (answer.code === "superseded" && lastSent === pending.judgment) lastSent = answer.judgment;
    if (revising()) {
      showErrors({}, reason); // next to the send button, as an alert
      setStatus("Revision not saved.", "warn");
      $("#send-revision").hidden = true; // it cannot succeed now: only the way back is left
      $("#cancel-revision").textContent = "Back to your task";
      $("#cancel-revision").focus();
    } else setStatus(reason, "warn");
    await refreshRecent();
  } finally {
    sending = false;
    $("#send-revision").disabled = false;
  }
}

// Why the server refused a revision, in words (the codes are in annotation/corrections.py).
function refusal(status, answer, pending) {
  if (answer.code === "round_closed") {
    return `Round ${answer.round || pending.round} is closed, so its judgments can no longer be revised: this revision was not saved, and your judgment stays as you sent it.`;
  }
  if (answer.code === "superseded") {
    return "This judgment was revised already (in another tab, perhaps), so this revision was not saved. Open the newest version from your recent judgments to revise it.";
  }
  if (status === 404) return "This judgment is not one of yours, or no longer exists: the revision was not saved.";
  return answer.detail || `The revision was not saved (${status}).`;
}

// A revision left in the outbox by a reload: sent before anything else, without the editor.
export async function resendRevision(pending) {
  await deliver(pending);
}

// Back to the task in hand. After a revision was saved the list is redrawn (it names the new
// judgment); otherwise the focus goes back to the button that opened the revision.
async function leave(message, kind, { saved = false } = {}) {
  const from = opener;
  current = null;
  opener = null;
  showMode(false);
  hooks.resume();
  setStatus(message, kind);
  for (const node of document.querySelectorAll(".recent-item.current")) node.classList.remove("current");
  if (saved) await refreshRecent();
  else if (from && !from.hidden && from.isConnected) from.focus();
}

export async function cancelRevision() {
  if (!current || sending) return;
  localStorage.removeItem(draftKey(current.id));
  await leave("Revision cancelled: your judgment stays as it was. Back to your task.", "info");
}

// `resume` goes back to the task in hand; `busy` says a submit is on its way; `closeSkip`
// folds the skip form, which a revision does not offer.
export function setupRevise(workspace) {
  hooks = workspace;
  $("#recent-toggle").addEventListener("click", () => toggleRecent());
  $("#revise-last").addEventListener("click", reviseLast);
  $("#send-revision").addEventListener("click", sendRevision);
  $("#cancel-revision").addEventListener("click", cancelRevision);
}
