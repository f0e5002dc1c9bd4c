// Getting a judgment to the server: a submit, or a revision of one already sent (revise.js).
//
// What is sent is first written to an outbox in localStorage, so a reload or a closed tab during
// an outage sends it again on the next visit, and it is retried with the same body until the
// server answers. Both endpoints are idempotent: the same body twice is one judgment.
"use strict";

import { api, setStatus, wait } from "./shared.js";

const OUTBOX = "feedback-loop.outbox";

// One entry at a time: {assignment, body} for a submit, {judgment, round, body} for a revision.
export const outbox = {
  put(entry) { localStorage.setItem(OUTBOX, JSON.stringify(entry)); },
  clear() { localStorage.removeItem(OUTBOX); },
  pending() {
    try {
      return JSON.parse(localStorage.getItem(OUTBOX) || "null");
    } catch {
      return null;
    }
  },
};

// Send until the server answers: a network error or a 5xx is retried with the same body,
// with a growing pause.
export async function sendUntilAnswered(url, body) {
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
