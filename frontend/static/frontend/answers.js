// The workspace's answer cards: each answer as written (or its Markdown), buttons to rank it
// by tapping, and its 1–7 scores with the scale's anchors under the buttons.
"use strict";

import { $, el, fillText } from "./shared.js";
import { LETTERS, ordinal } from "./ranking.js";

// One row of score buttons for an axis, the anchors of its scale (1, middle, top) under it.
function scoreFieldset(completion, axis, scores, onScore) {
  const name = `score-${completion.id}-${axis.key}`;
  const guideId = `guide-${completion.id}-${axis.key}`;
  const fieldset = el("fieldset", { class: "score", dataset: { axis: axis.key, completion: completion.id } });
  fieldset.append(el("legend", { title: axis.question }, el("span", { text: axis.label })));
  const points = el("div", { class: "points" });
  for (let n = axis.min; n <= axis.max; n += 1) {
    const id = `${name}-${n}`;
    const input = el("input", {
      type: "radio", name, id, value: n, "aria-describedby": guideId,
      checked: scores[completion.id]?.[axis.key] === n,
    });
    const guideline = axis.guidelines[String(n)] || "";
    const label = el("label", { for: id, title: guideline, class: "point" }, input, el("span", { text: String(n) }));
    const showGuide = () => { $(`#${guideId}`).textContent = `${n}: ${guideline}`; };
    label.addEventListener("mouseenter", showGuide);
    input.addEventListener("focus", showGuide);
    input.addEventListener("change", () => onScore(completion.id, axis.key, n));
    points.append(label);
  }
  fieldset.append(points);
  const middle = Math.round((axis.min + axis.max) / 2);
  const anchors = el("ul", { class: "anchors" });
  for (const n of [axis.min, middle, axis.max]) {
    anchors.append(el("li", {}, el("b", { text: String(n) }), ` ${axis.guidelines[String(n)] || ""}`));
  }
  fieldset.append(anchors);
  // The guideline of the point under the pointer or focus; empty until then.
  fieldset.append(el("p", { class: "guide", id: guideId, "aria-live": "polite" }));
  fieldset.append(el("p", { class: "field-error", role: "alert", dataset: { errorFor: `scores.${completion.id}.${axis.key}` } }));
  return fieldset;
}

// Tap-to-rank: a button per rank, a tie switch that makes the next tap share that rank, clear.
function rankButtons(completion, letter, count, actions) {
  const group = el("div", { class: "rank-buttons", role: "group", "aria-label": `Rank answer ${letter}` });
  for (let rank = 1; rank <= count; rank += 1) {
    // The name a screen reader (and a test) gets is "Answer A, rank 1"; the button shows "1".
    const button = el(
      "button", { type: "button", class: "rank-button", dataset: { rank }, "aria-pressed": "false", title: `${ordinal(rank)}` },
      el("span", { class: "visually-hidden", text: `Answer ${letter}, rank ` }), String(rank),
    );
    button.addEventListener("click", () => actions.rank(completion.id, rank));
    group.append(button);
  }
  const tie = el("button", { type: "button", class: "tie-button", "aria-pressed": "false" }, "Tie…", el("span", { class: "visually-hidden", text: ` answer ${letter} with a rank` }));
  tie.addEventListener("click", () => actions.armTie(completion.id));
  const clear = el("button", { type: "button", class: "clear-button", text: "×", "aria-label": `Take answer ${letter} out of the ranking` });
  clear.addEventListener("click", () => actions.rank(completion.id, 0));
  group.append(tie, clear);
  return group;
}

export function renderCards(container, task, state, actions) {
  container.replaceChildren();
  task.completions.forEach((completion, index) => {
    const letter = LETTERS[index];
    const content = el("div", { dataset: { textFor: completion.id } });
    fillText(content, completion);
    const card = el(
      "article",
      { class: "card answer", tabindex: "0", dataset: { id: completion.id, index }, "aria-labelledby": `answer-${completion.id}` },
      el("header", {}, el("h3", { id: `answer-${completion.id}`, text: `Answer ${letter}` }), el("span", { class: "rank-badge", dataset: { rankFor: completion.id } })),
      rankButtons(completion, letter, task.completions.length, actions),
      content,
      el("p", { class: "field-error", role: "alert", dataset: { errorFor: `scores.${completion.id}` } }),
    );
    for (const axis of task.rubric.axes) card.append(scoreFieldset(completion, axis, state.scores, actions.score));
    card.addEventListener("focusin", () => actions.focus(index));
    container.append(card);
  });
}

export function refillCards(container, task) {
  for (const completion of task.completions) fillText($(`[data-text-for="${completion.id}"]`, container), completion);
}

// Badges and pressed rank buttons follow the ranking.
export function showRanks(container, ranking, tieArmedFor) {
  const rows = ranking.rows();
  for (const card of container.querySelectorAll(".answer")) {
    const id = Number(card.dataset.id);
    const rank = ranking.rankOf(id);
    const peers = rows.find(([r]) => r === rank)?.[1].filter((x) => x !== id) || [];
    const badge = $(".rank-badge", card);
    badge.textContent = rank ? `${ordinal(rank)}${peers.length ? ` (tie with ${peers.map((p) => ranking.letter(p)).join(", ")})` : ""}` : "unranked";
    badge.classList.toggle("unranked", !rank);
    for (const button of card.querySelectorAll(".rank-button")) button.setAttribute("aria-pressed", String(Number(button.dataset.rank) === rank));
    $(".tie-button", card).setAttribute("aria-pressed", String(tieArmedFor === id));
  }
}
