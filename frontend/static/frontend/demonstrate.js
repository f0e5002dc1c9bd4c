// Demonstrations: show a prompt and the model's answers, let the annotator write (or edit from
// an answer) the ideal reply with a preview, save it through the API and move on; skip with a
// reason; reopen one's last demonstration while its round is open. The text in progress is kept
// in localStorage.
"use strict";

import { $, $$, api, el, fillText, markdownSwitch, refillThread, renderThread } from "./shared.js";

const root = document.getElementById("demonstrate");
const LETTERS = "ABCDEFGH";
let current = null; // the prompt payload, with `id` and `text` when editing a saved one
let previewTimer = null;
const editing = () => current && current.id !== undefined;
const draftKey = () => `feedback-loop.demo.${current.prompt}${editing() ? `.edit.${current.id}` : ""}`;

function status(message, kind = "info") {
  $("#status").textContent = message;
  $("#status").dataset.kind = kind;
}

function clearErrors() {
  for (const node of $$(".field-error", root)) node.textContent = "";
}

function showErrors(error) {
  for (const [field, reasons] of Object.entries(error.fields || {})) {
    const target = $(`[data-error-for="${field}"]`, root) || $('[data-error-for="general"]', root);
    target.textContent = reasons.join(" ");
  }
  if (!Object.keys(error.fields || {}).length) $('[data-error-for="general"]', root).textContent = error.detail || "Not saved.";
}

function renderCandidates(completions) {
  const box = $("#candidates");
  box.replaceChildren();
  if (!completions.length) box.append(el("p", { text: "The model has no answers to this prompt yet." }));
  completions.forEach((completion, index) => {
    const text = el("div", { dataset: { textFor: completion.id } });
    fillText(text, completion);
    const start = el("button", { type: "button", class: "secondary", text: `Start from answer ${LETTERS[index]}` });
    start.addEventListener("click", () => {
      $("#answer").value = completion.text;
      $("#answer").dataset.source = String(completion.id);
      $("#answer").focus();
      keepDraft();
      preview();
    });
    box.append(el("article", { class: "candidate", "aria-label": `Answer ${LETTERS[index]}` }, el("h3", { text: `Answer ${LETTERS[index]}` }), text, start));
  });
}

// What the round's rubric says a top answer is, axis by axis, and its general guidelines.
function renderIdeal(rubric) {
  const box = $("#ideal");
  box.replaceChildren();
  if (!rubric) return;
  const list = el("dl", { class: "scale wide" });
  for (const axis of rubric.axes) list.append(el("dt", { text: axis.label }), el("dd", { text: axis.guidelines[String(axis.max)] || axis.question }));
  const general = el("details", {}, el("summary", { text: "The raters' guidelines" }));
  const body = el("div", { class: "md" });
  body.innerHTML = rubric.guidelines_html; // sanitized on the server
  general.append(body);
  box.append(el("p", { text: "An answer that would get the top score on every axis:" }), list, general);
}

function render(data) {
  current = data;
  $("#empty").hidden = true;
  $("#form").hidden = false;
  $("#mode-title").textContent = editing() ? "Edit your last demonstration" : "Write the ideal answer";
  $("#save").textContent = editing() ? "Save changes" : "Save and next";
  $("#save").append(" ", el("kbd", { text: "Ctrl+Enter" }));
  $("#skip-open").hidden = editing();
  $("#back-to-new").hidden = !editing();
  $("#edit-last").hidden = editing();
  renderThread($("#thread"), data.messages);
  renderCandidates(data.completions);
  renderIdeal(data.rubric);
  const draft = JSON.parse(localStorage.getItem(draftKey()) || "null");
  $("#answer").value = draft ? draft.text : editing() ? data.text : "";
  $("#answer").dataset.source = draft && draft.source ? String(draft.source) : "";
  $("#skip-form").hidden = true;
  clearErrors();
  preview();
}

function keepDraft() {
  if (current) localStorage.setItem(draftKey(), JSON.stringify({ text: $("#answer").value, source: $("#answer").dataset.source || null }));
}

// The server renders the preview with the same sanitizer as everything else the pages show.
function preview() {
  clearTimeout(previewTimer);
  previewTimer = setTimeout(async () => {
    const text = $("#answer").value;
    if (!text.trim()) { $("#preview").replaceChildren(el("p", { class: "hint", text: "Nothing written yet." })); return; }
    const response = await api(root.dataset.previewUrl, { method: "POST", body: { text } });
    if (response.ok && $("#answer").value === text) $("#preview").innerHTML = (await response.json()).html; // sanitized on the server
  }, 250);
}

async function next() {
  const response = await api(root.dataset.nextUrl);
  if (response.status === 204) { current = null; $("#form").hidden = true; $("#empty").hidden = false; return; }
  render(await response.json());
}

async function editLast() {
  const response = await api(root.dataset.lastUrl);
  if (response.status === 204) { status("You have no demonstration in an open round to edit.", "warn"); return; }
  render(await response.json());
  status("Editing your last demonstration: save to replace its text.");
}

async function save() {
  if (!current) return;
  clearErrors();
  const text = $("#answer").value;
  if (!text.trim()) { $('[data-error-for="text"]', root).textContent = "Write the ideal answer first."; return; }
  const source = $("#answer").dataset.source;
  const response = editing()
    ? await api(`${root.dataset.saveUrl}${current.id}/`, { method: "PUT", body: { text } })
    : await api(root.dataset.saveUrl, { method: "POST", body: { prompt: current.prompt, text, source_completion: source ? Number(source) : null } });
  if (response.ok) {
    localStorage.removeItem(draftKey());
    const message = editing() ? "Changes saved. Here is the next prompt." : "Saved. Here is the next prompt.";
    await next();
    status(message, "ok");
    return;
  }
  showErrors(await response.json().catch(() => ({})));
}

async function skip(reason) {
  const response = await api(root.dataset.skipUrl, { method: "POST", body: { prompt: current.prompt, reason } });
  if (response.ok) {
    localStorage.removeItem(draftKey());
    await next();
    status("Skipped: you will not be offered this prompt again.", "ok");
  } else {
    showErrors(await response.json().catch(() => ({})));
  }
}

function toggleSkip(open) {
  $("#skip-form").hidden = !open;
  $("#skip-open").setAttribute("aria-expanded", String(open));
  if (open) $(".skip-presets button").focus();
}

$("#answer").addEventListener("input", () => { keepDraft(); preview(); });
$("#save").addEventListener("click", save);
$("#edit-last").addEventListener("click", editLast);
$("#back-to-new").addEventListener("click", () => { status(""); next(); });
$("#skip-open").addEventListener("click", () => toggleSkip($("#skip-form").hidden));
$("#skip-cancel").addEventListener("click", () => toggleSkip(false));
for (const preset of $$(".skip-presets button")) preset.addEventListener("click", () => skip(preset.dataset.reason));
$("#skip-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const reason = $("#skip-reason").value.trim();
  if (!reason) { $('[data-error-for="reason"]', root).textContent = "Say why you skip this prompt: choose a reason above or write one."; return; }
  skip(reason);
});
markdownSwitch($("#markdown-toggle"), () => {
  if (!current) return;
  refillThread($("#thread"));
  for (const completion of current.completions) fillText($(`[data-text-for="${completion.id}"]`), completion);
});
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key === "Enter") { event.preventDefault(); save(); }
});
next();
