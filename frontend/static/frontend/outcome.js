// "None of these is acceptable": an outcome of its own beside the ranking, sent as
// `none_acceptable`. The ranking is still asked for (the order among bad answers still counts);
// the server leaves such a judgment out of the pair exports by default, labels every answer
// undesirable for KTO, and puts the prompt on the demonstration queue.
//
// The rubric's flag "all_bad" ("Every answer is unacceptable") says the same, and the server
// sets either from the other, so the workspace offers this one control and not that flag. A
// draft that raised the flag shows here ticked.
"use strict";

import { $ } from "./shared.js";

export const OUTCOME_FLAG = "all_bad";

// Show the draft's outcome in the checkbox and keep the draft in step with it; `changed` is
// told after each change (to save the draft and redraw the checklist).
export function showOutcome(root, state, changed) {
  const box = $("#none-acceptable", root);
  state.none_acceptable = Boolean(state.none_acceptable) || state.flags.includes(OUTCOME_FLAG);
  box.checked = state.none_acceptable;
  box.onchange = () => {
    state.none_acceptable = box.checked;
    // Unticked means unticked: the hidden flag must not say otherwise.
    state.flags = state.flags.filter((flag) => flag !== OUTCOME_FLAG);
    changed();
  };
}
