// What the annotator's pages share: building elements, the JSON API with the CSRF token, and
// showing untrusted text. Model output is evidence, so it is shown as written by default
// (escaped, whitespace kept, every character there); Markdown rendering is a per-browser
// choice, and the HTML for it was sanitized on the server.
"use strict";

export const $ = (selector, scope = document) => scope.querySelector(selector);
export const $$ = (selector, scope = document) => Array.from(scope.querySelectorAll(selector));
export const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const csrfToken = () => (document.cookie.match(/(?:^|; )csrftoken=([^;]+)/) || [])[1] || "";
const MARKDOWN = "feedback-loop.markdown";

export function el(tag, attributes = {}, ...children) {
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

// The page's status line (a polite live region): what just happened, and whether it went well.
export function setStatus(message, kind = "info") {
  const status = $("#status");
  status.textContent = message;
  status.dataset.kind = kind;
}

export async function api(url, { method = "GET", body } = {}) {
  return fetch(url, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

export const markdownOn = () => localStorage.getItem(MARKDOWN) === "1";

// Fill `node` with `item` ({text or content, html}): the text as written, or its Markdown.
export function fillText(node, item) {
  const markdown = markdownOn();
  node.className = markdown ? "md" : "plain";
  if (markdown) node.innerHTML = item.html; // sanitized on the server; the CSP forbids inline script
  else node.textContent = item.text ?? item.content;
}

// The "Render Markdown" switch: remembered per browser, and every text on the page follows it.
export function markdownSwitch(checkbox, refill) {
  checkbox.checked = markdownOn();
  checkbox.addEventListener("change", () => {
    localStorage.setItem(MARKDOWN, checkbox.checked ? "1" : "0");
    refill();
  });
}

// A conversation as a list of turns, each shown by fillText.
export function renderThread(list, messages) {
  list.replaceChildren();
  for (const message of messages) {
    const body = el("div", { dataset: { turn: list.childElementCount } });
    fillText(body, message);
    list.append(el("li", { class: `msg ${message.role}` }, el("span", { class: "role", text: message.role }), body));
  }
  list.messages = messages;
}

export function refillThread(list) {
  for (const body of $$("[data-turn]", list)) fillText(body, list.messages[Number(body.dataset.turn)]);
}
