// The ranking an annotator builds, as a plain model the workspace draws.
//
// A rank is absolute: pressing 3 on an answer puts it 3rd, whatever was pressed before, and the
// answer that held 3rd takes the place the moved answer had (a swap), so no key press can make
// a tie. A tie is made on purpose only (the tie key, the tie button, or a drop onto a rank that
// is taken), and every change can be undone. Ranks may have gaps while the annotator works
// (A 1st, B 3rd); the judgment sent is the groups in rank order, gaps closed.
"use strict";

export const LETTERS = "ABCDEFGHIJKLMNOP";

export const ordinal = (n) =>
  n === 1 ? "Best" : `${n}${["th", "st", "nd", "rd"][n % 10 > 3 || Math.floor(n / 10) === 1 ? 0 : n % 10]}`;

export class Ranking {
  // `ids`: the answers in the order they are shown; `ranks`: {id: rank} from a draft.
  constructor(ids, ranks = {}) {
    this.ids = ids;
    this.ranks = new Map();
    for (const id of ids) if (Number.isInteger(ranks[id]) && ranks[id] > 0) this.ranks.set(id, ranks[id]);
    this.history = [];
  }

  // Drafts written before ranks were absolute kept groups; their order is the same ranking.
  static fromGroups(ids, groups) {
    const ranking = new Ranking(ids);
    ranking.ranks = Ranking.#consecutive(ids, groups);
    return ranking;
  }

  static #consecutive(ids, groups) {
    const ranks = new Map();
    groups.filter((g) => g.length).forEach((group, i) => group.forEach((id) => ids.includes(id) && ranks.set(id, i + 1)));
    return ranks;
  }

  letter(id) { return LETTERS[this.ids.indexOf(id)]; }
  rankOf(id) { return this.ranks.get(id) || 0; }
  get rankedCount() { return this.ranks.size; }
  get unranked() { return this.ids.filter((id) => !this.ranks.has(id)); }
  toJSON() { return Object.fromEntries(this.ranks); }

  // The rank numbers in use, each with its answers in display order: [[rank, [ids]], ...].
  rows() {
    const byRank = new Map();
    for (const id of this.ids) {
      const rank = this.ranks.get(id);
      if (rank) byRank.set(rank, [...(byRank.get(rank) || []), id]);
    }
    return [...byRank.entries()].sort((a, b) => a[0] - b[0]);
  }

  // What the server stores: groups best first, ties as one group, gaps closed.
  groups() { return this.rows().map(([, ids]) => ids); }

  #remember() {
    this.history.push(new Map(this.ranks));
    if (this.history.length > 100) this.history.shift();
  }

  // `id` takes rank `rank` (0 takes it out). Whoever held that rank takes `id`'s old place.
  set(id, rank) {
    if (this.rankOf(id) === rank) return false;
    this.#remember();
    const old = this.rankOf(id);
    for (const [other, r] of [...this.ranks]) {
      if (other === id || r !== rank || rank === 0) continue;
      if (old) this.ranks.set(other, old);
      else this.ranks.delete(other);
    }
    if (rank === 0) this.ranks.delete(id);
    else this.ranks.set(id, rank);
    return true;
  }

  // `id` shares rank `rank` with the answers already there: the one way to make a tie.
  tie(id, rank) {
    if (rank < 1 || this.rankOf(id) === rank) return false;
    this.#remember();
    this.ranks.set(id, rank);
    return true;
  }

  // Drag and drop works on the rows as drawn: `id` as a rank of its own before row `index`.
  insertBefore(id, index) {
    this.#remember();
    const groups = this.groups().map((g) => g.filter((x) => x !== id));
    groups.splice(index, 0, [id]);
    this.ranks = Ranking.#consecutive(this.ids, groups);
    return true;
  }

  // A drop onto a row: `id` joins that row's rank (a tie made on purpose).
  join(id, index) {
    const row = this.rows()[index];
    return row ? this.tie(id, row[0]) : this.set(id, this.rows().length ? this.rows().at(-1)[0] + 1 : 1);
  }

  undo() {
    if (!this.history.length) return false;
    this.ranks = this.history.pop();
    return true;
  }

  static #gap(first, last) {
    const name = (n) => (n === 1 ? "best" : ordinal(n));
    return `no answer is ${first === last ? name(first) : `${name(first)} to ${name(last)}`} yet`;
  }

  // The ranking in words, as the annotator should check it before submitting.
  describe() {
    const rows = this.rows();
    if (!rows.length) return "Nothing ranked yet.";
    const parts = [];
    let expected = 1;
    for (const [rank, ids] of rows) {
      if (rank > expected) parts.push(Ranking.#gap(expected, rank - 1));
      const names = ids.map((id) => this.letter(id));
      const who = names.length > 1 ? `${names.slice(0, -1).join(", ")} and ${names.at(-1)} tie` : names[0];
      parts.push(rank === 1 ? `${who} ${names.length > 1 ? "for best" : "is best"}` : `${who} ${names.length > 1 ? "for" : "is"} ${ordinal(rank)}`);
      expected = rank + 1;
    }
    const missing = this.unranked.map((id) => this.letter(id));
    const tail = missing.length ? ` Not ranked yet: ${missing.join(", ")}.` : "";
    return `${parts.join("; ")}.${tail}`;
  }
}
