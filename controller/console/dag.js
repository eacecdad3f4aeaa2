// A task's DAG as SVG: one row per stage, top to bottom, a box per subtask of a narrow
// stage and a cell per subtask of a wide one, long runs of alike stages folded on big
// graphs. Drawn whole only when its shape changes; otherwise each status change only
// changes the classes and texts of the boxes and cells it concerns.

import { h, s, setAttr, setText } from "./dom.js";

export const STATUSES = ["PENDING", "READY", "RUNNING", "CANCELING", "FAILED", "SUCCESSFUL"];
/** A stage with more subtasks than this is drawn as one box with a cell per subtask. */
const EXPAND_LIMIT = 8;
/** Runs of at least this many alike stages are folded into one row on big graphs. */
const FOLD_RUN = 4;
/** Graphs with fewer stages than this are drawn whole. */
const FOLD_ABOVE = 40;
const BOX_W = 190, BOX_H = 42, GAP = 14, ROW_GAP = 26, CELL = 10, CELLS_PER_ROW = 50, LEFT = 44;

export function legend() {
  return h("div", { class: "legend" }, ...STATUSES.map((x) => h("span", {}, h("i", { class: `l-${x}` }), x)));
}

/** Host of a per-host subtask: its own `hostId`, else (an older controller) the task's host list. */
export function hostOf(task, sub) {
  if (sub.hostId !== undefined) return `host ${sub.hostId}`;
  const ids = (task.context && task.context.listMap && task.context.listMap.host_ids) || [];
  if (sub.parallelIdx >= 0 && ids[sub.parallelIdx]) return `host ${ids[sub.parallelIdx]}`;
  if (task.hostId) return `host ${task.hostId}`;
  return "";
}

/**
 * The DAG of the task on screen, in `container`: `show(page)` draws it, or brings what is
 * drawn up to date. `onSelect(subtaskId)` and `onUnfold(foldKey)` are called on clicks.
 */
export class Dag {
  constructor(container, onSelect, onUnfold) {
    this.container = container;
    this.onSelect = onSelect;
    this.onUnfold = onUnfold;
    this.shape = null;
    this.drawn = null;
  }

  show(page) {
    const levels = stagesOf(page.task);
    const rows = rowsOf(levels, page.unfolded);
    const shape = shapeOf(page.task, rows);
    if (shape !== this.shape) {
      this.shape = shape;
      this.drawn = draw(page, levels, rows, this.onSelect, this.onUnfold);
      this.container.replaceChildren(this.drawn.svg);
    } else {
      update(this.drawn, page);
    }
  }
}

/**
 * Stages of the DAG: subtasks at the same depth (longest path from a root) with the
 * same name, in order. The seeds' stage-wise batches and the rolling chains both come
 * out as one row per step (per batch, for rolling tasks).
 */
function stagesOf(task) {
  const byId = new Map(task.subtasks.map((x) => [x.id, x]));
  const depth = new Map();
  const indegree = new Map(task.subtasks.map((x) => [x.id, x.upstreams.filter((u) => byId.has(u)).length]));
  const queue = task.subtasks.filter((x) => indegree.get(x.id) === 0).map((x) => x.id);
  queue.forEach((q) => depth.set(q, 0));
  for (let i = 0; i < queue.length; i++) {
    const id = queue[i];
    for (const d of byId.get(id).downstreams) {
      if (!byId.has(d)) continue;
      depth.set(d, Math.max(depth.get(d) || 0, depth.get(id) + 1));
      indegree.set(d, indegree.get(d) - 1);
      if (indegree.get(d) === 0) queue.push(d);
    }
  }
  const levels = [];
  for (const sub of task.subtasks) {
    const d = depth.has(sub.id) ? depth.get(sub.id) : 0;
    (levels[d] = levels[d] || new Map());
    const group = levels[d].get(sub.name) || [];
    group.push(sub);
    levels[d].set(sub.name, group);
  }
  return levels.filter(Boolean).map((groups) => [...groups.values()].map((subs) => subs.sort((a, b) => a.parallelIdx - b.parallelIdx || a.id - b.id)));
}

function uniformStatus(level) {
  const first = level[0][0].status;
  return level.every((g) => g.every((x) => x.status === first)) ? first : null;
}

/** Rows to draw: levels, with long runs of alike levels folded unless unfolded. */
function rowsOf(levels, unfolded) {
  const rows = [];
  if (levels.length <= FOLD_ABOVE) return levels.map((level, i) => ({ level, index: i }));
  let i = 0;
  while (i < levels.length) {
    const status = uniformStatus(levels[i]);
    let j = i;
    while (status && j + 1 < levels.length && uniformStatus(levels[j + 1]) === status) j++;
    const key = `${i}-${j}`;
    if (!status || j - i + 1 < FOLD_RUN) {
      rows.push({ level: levels[i], index: i });
      i++;
    } else if (unfolded.has(key)) {
      for (let k = i; k <= j; k++) rows.push({ level: levels[k], index: k });
      i = j + 1;
    } else {
      const count = levels.slice(i, j + 1).reduce((n, l) => n + l.reduce((m, g) => m + g.length, 0), 0);
      rows.push({ fold: { key, from: i, to: j, status, count } });
      i = j + 1;
    }
  }
  return rows;
}

/** What decides where everything is drawn: the rows, their folds and their subtasks. */
function shapeOf(task, rows) {
  const parts = rows.map((row) => {
    if (row.fold) return `${row.fold.key}:${row.fold.status}:${row.fold.count}`;
    return `${row.index}=` + row.level.map((g) => g.map((x) => x.id).join(",")).join(";");
  });
  return `${task.id}|${task.subtasks.length}|${parts.join("/")}`;
}

/** The whole graph, and what `update` changes of it. */
function draw(page, levels, rows, onSelect, onUnfold) {
  const task = page.task;
  const anchors = new Map(); // subtask id -> {x, top, bottom} of what stands for it
  const items = [];
  const drawn = { svg: null, boxes: new Map(), cells: new Map(), groups: [] };
  let y = 12, width = 600;

  for (const row of rows) {
    if (row.fold) {
      const f = row.fold;
      const g = s("g", { class: "fold", "data-fold": f.key, onclick: () => onUnfold(f.key) },
        s("rect", { x: LEFT, y, width: 520, height: 28, rx: 6 }),
        s("text", { x: LEFT + 12, y: y + 18 }, `stages ${f.from + 1}–${f.to + 1}: ${f.count} subtasks, all ${f.status} (click to show)`));
      items.push(g);
      // Edges into and out of a fold attach to its middle.
      const anchor = { x: LEFT + 260, top: y, bottom: y + 28 };
      for (const level of levels.slice(f.from, f.to + 1)) for (const g of level) for (const sub of g) anchors.set(sub.id, anchor);
      y += 28 + ROW_GAP;
      continue;
    }
    let x = LEFT, rowHeight = BOX_H;
    items.push(s("text", { x: 6, y: y + 16, class: "small" }, `${row.index + 1}`));
    for (const group of row.level) {
      if (group.length <= EXPAND_LIMIT) {
        for (const sub of group) {
          const box = subtaskBox(task, sub, x, y, page.selected === sub.id);
          drawn.boxes.set(sub.id, box);
          items.push(box.g);
          anchors.set(sub.id, { x: x + BOX_W / 2, top: y, bottom: y + BOX_H });
          x += BOX_W + GAP;
        }
      } else {
        const box = groupBox(task, group, x, y, page.selected, drawn.cells);
        drawn.groups.push(box);
        items.push(box.g);
        for (const sub of group) anchors.set(sub.id, { x: x + box.width / 2, top: y, bottom: y + box.height });
        rowHeight = Math.max(rowHeight, box.height);
        x += box.width + GAP;
      }
    }
    width = Math.max(width, x + 10);
    y += rowHeight + ROW_GAP;
  }

  const edges = new Set();
  const paths = [];
  for (const sub of task.subtasks) {
    const to = anchors.get(sub.id);
    for (const u of sub.upstreams) {
      const from = anchors.get(u);
      if (!from || !to || from === to || from.bottom >= to.top) continue;
      const key = `${from.x},${from.bottom}>${to.x},${to.top}`;
      if (edges.has(key)) continue;
      edges.add(key);
      const mid = (from.bottom + to.top) / 2;
      paths.push(s("path", { class: "edge", "marker-end": "url(#arrow)", d: `M${from.x},${from.bottom} C${from.x},${mid} ${to.x},${mid} ${to.x},${to.top - 2}` }));
    }
  }
  const defs = s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8c959f" })));
  // One listener for every box and cell: a thousand-host stage is a thousand cells.
  const pick = (ev) => {
    const hit = ev.target.closest("[data-subtask-id]");
    if (hit) onSelect(Number(hit.dataset.subtaskId));
  };
  drawn.svg = s("svg", { width, height: y, "data-subtasks": task.subtasks.length, onclick: pick }, defs, ...paths, ...items);
  return drawn;
}

/** Brings a drawn graph of the same shape up to date: attributes and texts only. */
function update(drawn, page) {
  const task = page.task;
  const byId = new Map(task.subtasks.map((x) => [x.id, x]));
  for (const [id, box] of drawn.boxes) {
    const sub = byId.get(id);
    if (sub) fillBox(box, task, sub, page.selected === id);
  }
  for (const [id, cell] of drawn.cells) {
    const sub = byId.get(id);
    if (sub) fillCell(cell, task, sub, page.selected === id);
  }
  for (const group of drawn.groups) fillGroup(group, group.ids.map((id) => byId.get(id)).filter(Boolean));
}

function pulse(status) {
  return status === "RUNNING" ? " pulse" : "";
}

function subtaskBox(task, sub, x, y, selected) {
  const label = sub.name.length > 28 ? sub.name.slice(0, 27) + "…" : sub.name;
  const box = {
    g: s("g", { class: "node", "data-subtask-id": sub.id }),
    title: s("title", {}, ""),
    rect: s("rect", { x, y, width: BOX_W, height: BOX_H }),
    status: s("text", { x: x + 8, y: y + 33, class: "small" }, ""),
  };
  box.g.append(box.title, box.rect, s("text", { x: x + 8, y: y + 17 }, label), box.status);
  fillBox(box, task, sub, selected);
  return box;
}

function fillBox(box, task, sub, selected) {
  setAttr(box.g, "class", `node${selected ? " selected" : ""}`);
  setAttr(box.g, "data-status", sub.status);
  setText(box.title, `${sub.name} (${hostOf(task, sub) || "whole task"}): ${sub.status}`);
  setAttr(box.rect, "class", `box f-${sub.status}${pulse(sub.status)}`);
  setText(box.status, `${hostOf(task, sub)} ${sub.status}`.trim());
}

/** A stage of many hosts: one box, a bar of the counts, and a small cell per subtask. */
function groupBox(task, group, x, y, selectedId, cells) {
  const perRow = Math.min(CELLS_PER_ROW, group.length);
  const width = Math.max(260, perRow * CELL + 16);
  const cellRows = Math.ceil(group.length / perRow);
  const height = 46 + cellRows * CELL + 8;
  const box = {
    g: s("g", { class: "group", "data-group": group[0].name, "data-count": group.length }),
    rect: s("rect", { x, y, width, height, rx: 6, stroke: "#57606a" }),
    counts: s("text", { x: x + 8, y: y + 31, class: "small" }, ""),
    // A bar segment per status, in order, zero wide while no subtask has it.
    bar: STATUSES.map((st) => s("rect", { class: `f-${st}`, x: x + 8, y: y + 36, width: 0, height: 4 })),
    barX: x + 8,
    barWidth: width - 16,
    ids: group.map((sub) => sub.id),
    width,
    height,
  };
  box.g.append(box.rect, s("text", { x: x + 8, y: y + 16 }, `${group[0].name} · ${group.length} hosts`), box.counts, ...box.bar);
  group.forEach((sub, i) => {
    const cx = x + 8 + (i % perRow) * CELL, cy = y + 46 + Math.floor(i / perRow) * CELL;
    const cell = {
      rect: s("rect", { x: cx, y: cy, width: CELL - 2, height: CELL - 2, rx: 2, "data-subtask-id": sub.id }),
      title: s("title", {}, ""),
    };
    cell.rect.append(cell.title);
    fillCell(cell, task, sub, selectedId === sub.id);
    cells.set(sub.id, cell);
    box.g.append(cell.rect);
  });
  fillGroup(box, group);
  return box;
}

function fillCell(cell, task, sub, selected) {
  setAttr(cell.rect, "class", `cell f-${sub.status}${pulse(sub.status)}${selected ? " selected" : ""}`);
  setAttr(cell.rect, "data-status", sub.status);
  setText(cell.title, `${sub.name} (${hostOf(task, sub)}): ${sub.status}`);
}

function fillGroup(box, group) {
  const counts = {};
  for (const sub of group) counts[sub.status] = (counts[sub.status] || 0) + 1;
  setAttr(box.rect, "class", `box ${groupClass(counts)}`);
  setText(box.counts, STATUSES.filter((st) => counts[st]).map((st) => `${counts[st]} ${st.toLowerCase()}`).join(" · "));
  let bx = box.barX;
  STATUSES.forEach((st, i) => {
    const w = counts[st] ? (box.barWidth * counts[st]) / group.length : 0;
    setAttr(box.bar[i], "x", bx);
    setAttr(box.bar[i], "width", w);
    bx += w;
  });
}

function groupClass(counts) {
  for (const st of ["FAILED", "RUNNING", "CANCELING", "READY", "PENDING"]) if (counts[st]) return `f-${st}`;
  return "f-SUCCESSFUL";
}
