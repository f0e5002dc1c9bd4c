// The annotator's workspace: lease a task, rank and rate its answers, submit, go on.
//
// Everything goes through the JSON API, with the session cookie and the CSRF token. Work in
// progress is kept in localStorage per assignment (a draft), so a reload or a dropped connection
// loses nothing; a submission is written to an outbox before it is sent and retried with the
// same body until the server answers, and the server stores one judgment per assignment.
"use strict";

(() => {
  const root = document.getElementById("workspace");
  if (!root) return;
  const $ = (selector, scope = document) => scope.querySelector(selector);
  const $$ = (selector, scope = document) => Array.from(scope.querySelectorAll(selector));
  const LETTERS = "ABCDEFGHIJKLMNOP";
  const OUTBOX = "feedback-loop.outbox";
  const draftKey = (assignment) => `feedback-loop.draft.${assignment}`;
  const urls = {
    next: root.dataset.nextUrl,
    stats: root.dataset.statsUrl,
    submit: (id) => `/api/v1/assignments/${id}/submit/`,
    skip: (id) => `/api/v1/assignments/${id}/skip/`,
  };

  let task = null; // the leased task as the API returned it
  let state = null; // {ranking, scores, strength, flags, rationale, startedAt}
  let activeIndex = 0; // which answer number keys act on
  let leaseTimer = null;
  let busy = false;

  // ---- small helpers -------------------------------------------------------------------------

  const csrfToken = () => (document.cookie.match(/(?:^|; )csrftoken=([^;]+)/) || [])[1] || "";
  const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const letterOf = (id) => LETTERS[task.completions.findIndex((c) => c.id === id)];
  const ordinal = (n) => (n === 1 ? "Best" : `${n}${["th", "st", "nd", "rd"][n % 10 > 3 || Math.floor(n / 10) === 1 ? 0 : n % 10]}`);

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (value === false || value === null || value === undefined) continue;
      if (key === "text") node.textContent = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function setStatus(message, kind = "info") {
    const status = $("#status");
    status.textContent = message;
    status.dataset.kind = kind;
  }

  async function api(url, { method = "GET", body } = {}) {
    return fetch(url, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  // Send until the server answers: a network error or a 5xx is retried with the same body,
  // with a growing pause. The server treats the same body twice as one submission.
  async function sendUntilAnswered(url, body) {
    let pause = 400;
    for (let attempt = 1; ; attempt += 1) {
      try {
        const response = await api(url, { method: "POST", body });
        if (response.status < 500) return response;
      } catch (error) {
        // fetch failed: offline, connection reset, or the response was lost on the way.
      }
      setStatus(`Connection problem; your work is kept and will be sent again (try ${attempt})…`, "warn");
      await wait(pause);
      pause = Math.min(pause * 2, 8000);
    }
  }

  // ---- drafts --------------------------------------------------------------------------------

  function saveDraft() {
    if (task) localStorage.setItem(draftKey(task.assignment), JSON.stringify(state));
  }

  function restoreDraft(assignment) {
    try {
      return JSON.parse(localStorage.getItem(draftKey(assignment)) || "null");
    } catch {
      return null;
    }
  }

  // ---- ranking model -------------------------------------------------------------------------

  const ranked = () => new Set(state.ranking.flat());
  const displayOrder = (id) => task.completions.findIndex((c) => c.id === id);

  function normalise(groups) {
    return groups.filter((g) => g.length).map((g) => [...g].sort((a, b) => displayOrder(a) - displayOrder(b)));
  }

  // Put `id` at rank `rank` (1-based): joining the group already there makes a tie; a rank past
  // the last group starts a new last group. Rank 0 takes it out of the ranking.
  function place(id, rank) {
    const groups = normalise(state.ranking.map((g) => g.filter((x) => x !== id)));
    if (rank > 0) {
      if (rank - 1 < groups.length) groups[rank - 1].push(id);
      else groups.push([id]);
    }
    state.ranking = normalise(groups);
    changed();
  }

  // Insert `id` as a group of its own before position `index` (0-based).
  function insertAt(id, index) {
    const before = state.ranking.slice(0, index).map((g) => g.filter((x) => x !== id));
    const after = state.ranking.slice(index).map((g) => g.filter((x) => x !== id));
    state.ranking = normalise([...before, [id], ...after]);
    changed();
  }

  function changed() {
    saveDraft();
    renderBoard();
    renderStrength();
    renderRankBadges();
  }

  // ---- rendering -----------------------------------------------------------------------------

  function renderThread(messages) {
    const thread = $("#thread");
    thread.replaceChildren();
    for (const message of messages) {
      const body = el("div", { class: "md" });
      body.innerHTML = message.html; // sanitized on the server; the CSP forbids inline script too
      thread.append(el("li", { class: `msg ${message.role}` }, el("span", { class: "role", text: message.role }), body));
    }
  }

  function scoreFieldset(completion, axis) {
    const name = `score-${completion.id}-${axis.key}`;
    const guideId = `guide-${completion.id}-${axis.key}`;
    const fieldset = el("fieldset", { class: "score", dataset: { axis: axis.key, completion: completion.id } });
    fieldset.append(el("legend", { title: axis.question }, el("span", { text: axis.label })));
    const points = el("div", { class: "points" });
    for (let n = axis.min; n <= axis.max; n += 1) {
      const id = `${name}-${n}`;
      const input = el("input", {
        type: "radio", name, id, value: n, "aria-describedby": guideId,
        checked: state.scores[completion.id]?.[axis.key] === n,
      });
      const guideline = axis.guidelines[String(n)] || "";
      const label = el("label", { for: id, title: guideline, class: "point" }, input, el("span", { text: String(n) }));
      const showGuide = () => { $(`#${guideId}`).textContent = `${n}: ${guideline}`; };
      label.addEventListener("mouseenter", showGuide);
      input.addEventListener("focus", showGuide);
      input.addEventListener("change", () => {
        state.scores[completion.id] = { ...(state.scores[completion.id] || {}), [axis.key]: n };
        clearError(`scores.${completion.id}.${axis.key}`);
        saveDraft();
      });
      points.append(label);
    }
    fieldset.append(points);
    // The guideline of the point under the pointer or focus; empty until then.
    fieldset.append(el("p", { class: "guide", id: guideId, "aria-live": "polite" }));
    fieldset.append(el("p", { class: "field-error", role: "alert", dataset: { errorFor: `scores.${completion.id}.${axis.key}` } }));
    return fieldset;
  }

  function renderCards() {
    const cards = $("#cards");
    cards.replaceChildren();
    task.completions.forEach((completion, index) => {
      const content = el("div", { class: "md" });
      content.innerHTML = completion.html; // sanitized on the server
      const card = el(
        "article",
        { class: "card answer", tabindex: "0", dataset: { id: completion.id, index }, "aria-labelledby": `answer-${completion.id}` },
        el("header", {}, el("h3", { id: `answer-${completion.id}`, text: `Answer ${LETTERS[index]}` }), el("span", { class: "rank-badge", dataset: { rankFor: completion.id } })),
        content,
        el("p", { class: "field-error", role: "alert", dataset: { errorFor: `scores.${completion.id}` } }),
      );
      for (const axis of task.rubric.axes) card.append(scoreFieldset(completion, axis));
      card.addEventListener("focusin", () => setActive(index, false));
      cards.append(card);
    });
    setActive(Math.min(activeIndex, task.completions.length - 1), false);
  }

  function renderRankBadges() {
    const rankOf = new Map();
    state.ranking.forEach((group, i) => group.forEach((id) => rankOf.set(id, { rank: i + 1, tie: group.length > 1 })));
    for (const badge of $$(".rank-badge")) {
      const info = rankOf.get(Number(badge.dataset.rankFor));
      badge.textContent = info ? `${ordinal(info.rank)}${info.tie ? " (tie)" : ""}` : "unranked";
      badge.classList.toggle("unranked", !info);
    }
  }

  function chip(id) {
    const button = el("button", { type: "button", class: "chip", draggable: "true", dataset: { id }, "aria-label": `Answer ${letterOf(id)}`, text: letterOf(id) });
    button.addEventListener("dragstart", (event) => {
      event.dataTransfer.setData("text/plain", String(id));
      event.dataTransfer.effectAllowed = "move";
    });
    button.addEventListener("click", () => setActive(displayOrder(id), true));
    return button;
  }

  function dropTarget(node, onDrop) {
    node.addEventListener("dragover", (event) => { event.preventDefault(); node.classList.add("over"); });
    node.addEventListener("dragleave", () => node.classList.remove("over"));
    node.addEventListener("drop", (event) => {
      event.preventDefault();
      node.classList.remove("over");
      const id = Number(event.dataTransfer.getData("text/plain"));
      if (task.completions.some((c) => c.id === id)) onDrop(id);
    });
    return node;
  }

  function renderBoard() {
    const board = $("#board");
    board.replaceChildren();
    state.ranking.forEach((group, index) => {
      board.append(dropTarget(el("div", { class: "insert", dataset: { insert: index }, "aria-hidden": "true" }), (id) => insertAt(id, index)));
      const row = el("div", { class: "rank-row", dataset: { rank: index + 1 } }, el("span", { class: "rank-label", text: ordinal(index + 1) }));
      for (const id of group) row.append(chip(id));
      if (group.length > 1) row.append(el("span", { class: "tie", text: "tie" }));
      board.append(dropTarget(row, (id) => place(id, index + 1)));
    });
    board.append(dropTarget(el("div", { class: "rank-row new", dataset: { rank: state.ranking.length + 1 } }, el("span", { class: "rank-label", text: "Drop here for a new, lower rank" })), (id) => place(id, state.ranking.length + 1)));
    const pool = el("div", { class: "pool", dataset: { rank: 0 } }, el("span", { class: "rank-label", text: "Unranked" }));
    const inRanking = ranked();
    for (const completion of task.completions) if (!inRanking.has(completion.id)) pool.append(chip(completion.id));
    board.append(dropTarget(pool, (id) => place(id, 0)));
  }

  function renderStrength() {
    const options = $("#strength-options");
    const topIsSingle = state.ranking.length > 1 && state.ranking[0].length === 1;
    const fieldset = $("#strength");
    fieldset.disabled = !topIsSingle;
    $("#strength-hint").textContent = topIsSingle
      ? `Answer ${letterOf(state.ranking[0][0])} against answer${state.ranking[1].length > 1 ? "s" : ""} ${state.ranking[1].map(letterOf).join(", ")}.`
      : "Rank one answer best, ahead of the others, to say how much better it is.";
    if (!topIsSingle) state.strength = "";
    if (!options.childElementCount) {
      for (const label of task.rubric.strength_labels) {
        const id = `strength-${label.key}`;
        const input = el("input", { type: "radio", name: "strength", id, value: label.key });
        input.addEventListener("change", () => { state.strength = label.key; clearError("strength"); saveDraft(); });
        options.append(el("label", { for: id, class: "inline" }, input, el("span", { text: ` ${label.label}` })));
      }
    }
    for (const input of $$("input[name=strength]", options)) input.checked = input.value === state.strength;
  }

  function renderGuidelines() {
    const box = $("#guidelines");
    box.replaceChildren(el("p", { text: task.rubric.guidelines }));
    for (const axis of task.rubric.axes) {
      const list = el("dl", { class: "scale" });
      for (let n = axis.min; n <= axis.max; n += 1) list.append(el("dt", { text: String(n) }), el("dd", { text: axis.guidelines[String(n)] }));
      box.append(el("h3", { text: `${axis.label}: ${axis.question}` }), list);
    }
  }

  function renderFlags() {
    const options = $("#flag-options");
    options.replaceChildren();
    for (const flag of task.rubric.flags) {
      const id = `flag-${flag.key}`;
      const input = el("input", { type: "checkbox", id, value: flag.key, checked: state.flags.includes(flag.key) });
      input.addEventListener("change", () => {
        state.flags = $$("input:checked", options).map((i) => i.value);
        saveDraft();
      });
      options.append(el("label", { for: id, class: "inline" }, input, el("span", { text: ` ${flag.label}` })));
    }
  }

  function setActive(index, focus) {
    const cards = $$(".answer");
    if (!cards.length) return;
    activeIndex = (index + cards.length) % cards.length;
    cards.forEach((card, i) => card.classList.toggle("active", i === activeIndex));
    if (focus) cards[activeIndex].focus();
  }

  function renderLease() {
    clearInterval(leaseTimer);
    const expires = Date.parse(task.lease_expires_at);
    const tick = () => {
      const left = Math.max(0, Math.round((expires - Date.now()) / 1000));
      const lease = $("#lease");
      lease.textContent = left > 0
        ? `Lease: ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")} left`
        : "Lease expired: you can still submit while nobody else has taken the slot.";
      lease.classList.toggle("expiring", left < 120);
    };
    tick();
    leaseTimer = setInterval(tick, 1000);
  }

  function showTask(leased) {
    task = leased;
    state = restoreDraft(task.assignment) || {
      ranking: [], scores: {}, strength: "", flags: [], rationale: "", startedAt: Date.now(),
    };
    activeIndex = 0;
    $("#empty").hidden = true;
    $("#task").hidden = false;
    $("#safety").hidden = !task.prompt.safety;
    renderThread(task.prompt.messages);
    renderCards();
    $("#strength-options").replaceChildren();
    renderBoard();
    renderStrength();
    renderRankBadges();
    renderFlags();
    $("#rationale").value = state.rationale;
    renderGuidelines();
    clearErrors();
    renderLease();
    saveDraft();
    setActive(0, true); // keyboard users start on the first answer
  }

  function showEmpty() {
    task = null;
    clearInterval(leaseTimer);
    $("#lease").textContent = "";
    $("#task").hidden = true;
    $("#empty").hidden = false;
  }

  // ---- errors --------------------------------------------------------------------------------

  function clearError(path) {
    const node = $(`[data-error-for="${CSS.escape(path)}"]`);
    if (node) node.textContent = "";
  }

  function clearErrors() {
    for (const node of $$(".field-error", root)) node.textContent = "";
    for (const node of $$("[aria-invalid]", root)) node.removeAttribute("aria-invalid");
  }

  // Put each reason next to its field: the most specific element whose data-error-for is the
  // field's path or a prefix of it ("scores.12.helpful", then "scores.12", then "scores").
  function showErrors(fields, detail) {
    clearErrors();
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

  // ---- submit --------------------------------------------------------------------------------

  function body() {
    return {
      ranking: state.ranking,
      scores: Object.fromEntries(task.completions.map((c) => [String(c.id), state.scores[c.id] || {}])),
      strength: state.strength,
      flags: state.flags,
      rationale: $("#rationale").value,
      time_spent_ms: Math.max(0, Date.now() - state.startedAt),
    };
  }

  // The same rules the server applies, checked first so nobody waits for a round trip.
  function validate(payload) {
    const errors = {};
    const inRanking = ranked();
    const missing = task.completions.filter((c) => !inRanking.has(c.id)).map((c) => LETTERS[displayOrder(c.id)]);
    if (missing.length) errors.ranking = [`Rank every answer; not ranked yet: ${missing.join(", ")}.`];
    for (const completion of task.completions) {
      for (const axis of task.rubric.axes) {
        if (!Number.isInteger(payload.scores[String(completion.id)][axis.key])) {
          errors[`scores.${completion.id}.${axis.key}`] = [`Rate ${axis.label.toLowerCase()} from ${axis.min} to ${axis.max}.`];
        }
      }
    }
    if (state.ranking.length > 1 && state.ranking[0].length === 1 && !payload.strength) {
      errors.strength = ["Say how much better the best answer is."];
    }
    return errors;
  }

  async function submit() {
    if (!task || busy) return;
    state.rationale = $("#rationale").value;
    const payload = body();
    const errors = validate(payload);
    if (Object.keys(errors).length) {
      showErrors(errors);
      setStatus("Some answers need a rank or a score; see the notes in red.", "warn");
      return;
    }
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
        await Promise.all([loadNext(), loadStats()]);
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
      $("#skip-form").hidden = true;
      setStatus("Skipped.", "ok");
      await loadNext();
    } else {
      const error = await response.json().catch(() => ({}));
      showErrors(error.fields, error.detail);
    }
  }

  // ---- loading -------------------------------------------------------------------------------

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
  }

  async function loadStats() {
    try {
      const response = await api(urls.stats);
      if (!response.ok) return;
      const stats = await response.json();
      const mean = stats.mean_time_spent_ms ? `${Math.round(stats.mean_time_spent_ms / 1000)} s per task` : "no timing yet";
      $("#stats").textContent = `Today: ${stats.judgments_today} · Total: ${stats.judgments_total} · ${mean} · Skipped: ${stats.skipped}`;
    } catch {
      // Stats are a courtesy; the workspace works without them.
    }
  }

  // ---- keyboard and controls -----------------------------------------------------------------

  function toggleHelp(force) {
    const help = $("#shortcuts");
    help.hidden = force === undefined ? !help.hidden : !force;
    $("#help-toggle").setAttribute("aria-expanded", String(!help.hidden));
  }

  function openSkip() {
    $("#skip-form").hidden = false;
    $("#skip-reason").focus();
  }

  document.addEventListener("keydown", (event) => {
    if (!task) return;
    const target = event.target;
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      event.preventDefault();
      submit();
      return;
    }
    if (target.matches("textarea, input[type=text], select") || event.altKey || event.ctrlKey || event.metaKey) return;
    const digit = /^[0-9]$/.test(event.key) ? Number(event.key) : null;
    if (digit !== null && target.matches("input[type=radio][name^=score-]")) {
      // On a score: the digit is the score.
      const option = $(`#${CSS.escape(`${target.name}-${digit}`)}`);
      if (option) { option.checked = true; option.dispatchEvent(new Event("change")); option.focus(); }
      event.preventDefault();
      return;
    }
    if (digit !== null) {
      place(task.completions[activeIndex].id, digit);
      event.preventDefault();
      return;
    }
    if (target.matches("input[type=radio]")) return; // arrows move within a radio group
    if (["ArrowRight", "ArrowDown", "j"].includes(event.key)) { setActive(activeIndex + 1, true); event.preventDefault(); }
    else if (["ArrowLeft", "ArrowUp", "k"].includes(event.key)) { setActive(activeIndex - 1, true); event.preventDefault(); }
    else if (event.key === "s") { openSkip(); event.preventDefault(); }
    else if (event.key === "?") { toggleHelp(); event.preventDefault(); }
  });

  $("#help-toggle").addEventListener("click", () => toggleHelp());
  $("#submit").addEventListener("click", submit);
  $("#skip-open").addEventListener("click", openSkip);
  $("#skip-cancel").addEventListener("click", () => { $("#skip-form").hidden = true; });
  $("#skip-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const reason = $("#skip-reason").value.trim();
    if (!reason) { showErrors({ reason: ["Say why you skip this task."] }); return; }
    skip(reason);
  });
  $("#rationale").addEventListener("input", () => { state.rationale = $("#rationale").value; saveDraft(); });
  $("#check-again").addEventListener("click", loadNext);
  window.addEventListener("online", () => setStatus("Back online.", "ok"));

  loadNext();
  loadStats();
})();
