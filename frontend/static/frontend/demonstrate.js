// Demonstrations: show a prompt, let the annotator write (or edit from an answer) the ideal
// reply, save it through the API, move on. The text in progress is kept in localStorage.
"use strict";

(() => {
  const root = document.getElementById("demonstrate");
  if (!root) return;
  const $ = (selector) => root.querySelector(selector);
  const csrfToken = () => (document.cookie.match(/(?:^|; )csrftoken=([^;]+)/) || [])[1] || "";
  let current = null;
  const draftKey = () => `feedback-loop.demo.${current.prompt}`;

  function status(message) { $("#status").textContent = message; }

  function render(data) {
    current = data;
    $("#empty").hidden = true;
    $("#form").hidden = false;
    const thread = $("#thread");
    thread.replaceChildren();
    for (const message of data.messages) {
      const item = document.createElement("li");
      item.className = `msg ${message.role}`;
      const role = document.createElement("span");
      role.className = "role";
      role.textContent = message.role;
      const body = document.createElement("div");
      body.className = "md";
      body.innerHTML = message.html; // sanitized on the server
      item.append(role, body);
      thread.append(item);
    }
    const starts = $("#starts");
    starts.replaceChildren();
    data.completions.forEach((completion, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "secondary";
      button.textContent = `Start from answer ${"ABCDEFGH"[index]}`;
      button.title = completion.text.slice(0, 300);
      button.addEventListener("click", () => {
        $("#answer").value = completion.text;
        $("#answer").dataset.source = String(completion.id);
        $("#answer").focus();
        localStorage.setItem(draftKey(), JSON.stringify({ text: completion.text, source: completion.id }));
      });
      starts.append(button);
    });
    const draft = JSON.parse(localStorage.getItem(draftKey()) || "null");
    $("#answer").value = draft ? draft.text : "";
    $("#answer").dataset.source = draft && draft.source ? String(draft.source) : "";
    for (const node of root.querySelectorAll(".field-error")) node.textContent = "";
  }

  async function next() {
    const response = await fetch(root.dataset.nextUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 204) { $("#form").hidden = true; $("#empty").hidden = false; return; }
    render(await response.json());
  }

  async function save() {
    const text = $("#answer").value;
    for (const node of root.querySelectorAll(".field-error")) node.textContent = "";
    if (!text.trim()) { root.querySelector('[data-error-for="text"]').textContent = "Write the ideal answer first."; return; }
    const source = $("#answer").dataset.source;
    const response = await fetch(root.dataset.saveUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({ prompt: current.prompt, text, source_completion: source ? Number(source) : null }),
    });
    if (response.status === 201) {
      localStorage.removeItem(draftKey());
      status("Saved. Here is the next prompt.");
      await next();
      return;
    }
    const error = await response.json().catch(() => ({}));
    for (const [field, reasons] of Object.entries(error.fields || {})) {
      const target = root.querySelector(`[data-error-for="${field}"]`) || root.querySelector('[data-error-for="general"]');
      target.textContent = reasons.join(" ");
    }
  }

  $("#answer").addEventListener("input", () => {
    if (current) localStorage.setItem(draftKey(), JSON.stringify({ text: $("#answer").value, source: $("#answer").dataset.source || null }));
  });
  $("#save").addEventListener("click", save);
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") { event.preventDefault(); save(); }
  });
  next();
})();
