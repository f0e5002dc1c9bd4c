// What a judgment still lacks, and where the reasons are shown.
//
// The page checks the same rules the server applies before sending, so nobody waits for a
// round trip: a checklist counts what is done, one banner names what is missing, and the fields
// themselves are marked (rather than a red line under each of nine scores). The server's own
// reasons, when it refuses, go next to the field they name.
"use strict";

import { $, $$ } from "./shared.js";

export function missing(task, ranking, state) {
  const letters = (ids) => ids.map((id) => ranking.letter(id)).join(", ");
  const unscored = task.rubric.axes.map((axis) => [axis, task.completions.filter((c) => !Number.isInteger(state.scores[c.id]?.[axis.key]))]);
  const groups = ranking.groups();
  return {
    unranked: ranking.unranked,
    unscored: unscored.filter(([, list]) => list.length),
    scored: task.completions.length * task.rubric.axes.length - unscored.reduce((n, [, list]) => n + list.length, 0),
    strengthNeeded: groups.length > 1 && groups[0].length === 1,
    text() {
      const parts = [];
      if (this.unranked.length) parts.push(`a rank for ${letters(this.unranked)}`);
      for (const [axis, list] of this.unscored) parts.push(`${axis.label.toLowerCase()} for ${letters(list.map((c) => c.id))}`);
      if (this.strengthNeeded && !state.strength) parts.push("the strength");
      return parts.join("; ");
    },
  };
}

// "ranked 3/3 · scored 7/9 · strength ✓" (and "· none acceptable" when that is ticked)
export function checklistText(task, m, state) {
  const total = task.completions.length;
  const strength = !m.strengthNeeded ? "strength not needed" : state.strength ? "strength ✓" : "strength —";
  const outcome = state.none_acceptable ? " · none acceptable" : "";
  return `ranked ${total - m.unranked.length}/${total} · scored ${m.scored}/${total * task.rubric.axes.length} · ${strength}${outcome}`;
}

const scoreField = (root, completion, axis) => $(`fieldset.score[data-completion="${completion}"][data-axis="${axis}"]`, root);

export function clearFieldError(root, path) {
  const node = $(`[data-error-for="${CSS.escape(path)}"]`, root);
  if (node) node.textContent = "";
  const [head, completion, axis] = path.split(".");
  const field = head === "scores" && axis ? scoreField(root, completion, axis) : null;
  if (field) field.removeAttribute("aria-invalid");
}

export function clearAllErrors(root) {
  for (const node of $$(".field-error", root)) node.textContent = "";
  for (const node of $$("[aria-invalid]", root)) node.removeAttribute("aria-invalid");
  $("#banner", root).hidden = true;
}

// The server's reasons, each next to its field: the most specific element whose data-error-for
// is the field's path or a prefix of it ("scores.12.helpful", then "scores.12", then "scores").
export function showServerErrors(root, fields, detail) {
  clearAllErrors(root);
  let first = null;
  for (const [path, reasons] of Object.entries(fields || {})) {
    let target = null;
    const parts = path.split(".");
    while (parts.length && !target) {
      target = $(`[data-error-for="${CSS.escape(parts.join("."))}"]`, root);
      parts.pop();
    }
    target = target || $('[data-error-for="general"]', root);
    target.textContent = [target.textContent, ...reasons].filter(Boolean).join(" ");
    const control = target.closest("fieldset, .card");
    if (control) control.setAttribute("aria-invalid", "true");
    first = first || target;
  }
  if (!first && detail) {
    first = $('[data-error-for="general"]', root);
    first.textContent = detail;
  }
  if (first) first.scrollIntoView({ block: "center", behavior: "smooth" });
}

export function showMissing(root, m, state) {
  clearAllErrors(root);
  for (const [axis, list] of m.unscored) for (const c of list) scoreField(root, c.id, axis.key).setAttribute("aria-invalid", "true");
  if (m.unranked.length) $("#ranking", root).setAttribute("aria-invalid", "true");
  if (m.strengthNeeded && !state.strength) $("#strength", root).setAttribute("aria-invalid", "true");
  const banner = $("#banner", root);
  banner.hidden = false;
  banner.textContent = `Still missing: ${m.text()}.`;
  const first = $("[aria-invalid=true]", root);
  if (first) first.scrollIntoView({ block: "center", behavior: "smooth" });
}
