// A small Markdown renderer for untrusted text (model answers, other members' messages).
//
// Safety by construction: it never produces an HTML string and never assigns innerHTML.
// Every piece of input text reaches the page through document.createTextNode, so a
// `<script>` or `<img onerror=…>` in the input is shown as those characters. The only
// attribute taken from the input is a link's href, and only for absolute http(s) and
// mailto URLs (checked after the URL parser normalises them). Images are shown as
// links (no request leaves the page by itself).
//
// Supported: paragraphs (single newlines kept), # headings, fenced and indented code,
// > quotes, - / * / 1. lists (nested by indentation), pipe tables, --- rules;
// inline `code`, **bold**, *italic*, ~~strike~~, [links](https://…), bare URLs, \escapes.
// Streaming-friendly: an unclosed ``` fence renders as code up to the end.
// Fenced code with a known language is coloured by highlight.js (./highlight.js).

import { highlightCode } from "./highlight.js";

const SAFE_SCHEMES = new Set(["http:", "https:", "mailto:"]);
const MAX_DEPTH = 12;

export function safeHref(raw) {
  const text = String(raw).trim();
  if (!/^(https?:\/\/|mailto:)/i.test(text)) return null;
  let url;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  return SAFE_SCHEMES.has(url.protocol) ? url.href : null;
}

function el(tag, ...children) {
  const node = document.createElement(tag);
  for (const child of children) {
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function link(href, children) {
  const a = el("a", ...children);
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow ugc";
  return a;
}

// -- blocks ------------------------------------------------------------------------

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)\s*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const ITEM = /^( {0,12})([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;

/** Render `text` into a DocumentFragment. */
export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  const lines = String(text ?? "").replace(/\r\n?/g, "\n").split("\n");
  for (const block of blocks(lines, 0)) frag.append(block);
  return frag;
}

function blocks(lines, depth) {
  const out = [];
  let i = 0;
  let para = [];
  const flush = () => {
    if (para.length) out.push(paragraph(para, depth));
    para = [];
  };
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      flush();
      i++;
      continue;
    }
    let m;
    if ((m = FENCE.exec(line))) {
      flush();
      const fence = m[1];
      const body = [];
      i++;
      while (i < lines.length && !closesFence(lines[i], fence)) body.push(lines[i++]);
      i++; // the closing fence (or past the end while still streaming)
      out.push(codeBlock(body.join("\n"), m[2]));
      continue;
    }
    if (depth < MAX_DEPTH && !para.length && /^( {4}|\t)/.test(line)) {
      const body = [];
      while (i < lines.length && (/^( {4}|\t)/.test(lines[i]) || !lines[i].trim())) {
        body.push(lines[i++].replace(/^( {4}|\t)/, ""));
      }
      while (body.length && !body[body.length - 1].trim()) body.pop();
      out.push(codeBlock(body.join("\n"), ""));
      continue;
    }
    if ((m = HEADING.exec(line))) {
      flush();
      const level = Math.min(m[1].length + 2, 6); // the page uses h1 and h2
      out.push(el(`h${level}`, ...inline(m[2], depth)));
      i++;
      continue;
    }
    if (RULE.test(line)) {
      flush();
      out.push(el("hr"));
      i++;
      continue;
    }
    if (depth < MAX_DEPTH && QUOTE.test(line)) {
      flush();
      const body = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        body.push(m[1]);
        i++;
      }
      out.push(el("blockquote", ...blocks(body, depth + 1)));
      continue;
    }
    if (depth < MAX_DEPTH && ITEM.test(line) && (!para.length || !/^ /.test(line))) {
      flush();
      const [list, next] = listBlock(lines, i, depth);
      out.push(list);
      i = next;
      continue;
    }
    if (
      line.includes("|") &&
      i + 1 < lines.length &&
      TABLE_SEP.test(lines[i + 1]) &&
      lines[i + 1].includes("-")
    ) {
      flush();
      const [table, next] = tableBlock(lines, i, depth);
      out.push(table);
      i = next;
      continue;
    }
    para.push(line);
    i++;
  }
  flush();
  return out;
}

function closesFence(line, fence) {
  const trimmed = line.trim();
  return trimmed.length >= fence.length && trimmed === fence[0].repeat(trimmed.length);
}

function codeBlock(text, lang) {
  const code = el("code", text);
  if (lang && /^[\w+#.-]{1,32}$/.test(lang)) {
    code.dataset.lang = lang;
    highlightCode(code, text, lang.toLowerCase());
  }
  const pre = el("pre", code);
  pre.tabIndex = 0; // scrollable regions must be reachable by keyboard
  return pre;
}

function paragraph(lines, depth) {
  const p = el("p");
  lines.forEach((line, n) => {
    if (n) p.append(el("br"));
    p.append(...inline(line.trim(), depth));
  });
  return p;
}

function listBlock(lines, start, depth) {
  const first = ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const list = el(ordered ? "ol" : "ul");
  if (ordered) {
    const n = parseInt(first[2], 10);
    if (n !== 1) list.start = n;
  }
  let i = start;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    const body = [m[3]];
    const contentIndent = indent + m[2].length + 1;
    i++;
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) {
        const next = lines[i + 1];
        if (next !== undefined && leading(next) > indent) {
          body.push("");
          i++;
          continue;
        }
        break;
      }
      const lead = leading(line);
      if (lead <= indent && ITEM.test(line)) break;
      if (lead < contentIndent && !ITEM.test(line) && lead <= indent) {
        // a lazy continuation line of the item's paragraph
        if (body[body.length - 1] === "") break;
      }
      body.push(line.slice(Math.min(lead, contentIndent)));
      i++;
    }
    const children = blocks(body, depth + 1);
    const li = el("li");
    if (children[0]?.tagName === "P" && !body.includes("")) {
      // a tight item: its text is not wrapped in a paragraph
      li.append(...children[0].childNodes, ...children.slice(1));
    } else {
      li.append(...children);
    }
    list.append(li);
    while (i < lines.length && !lines[i].trim()) {
      const next = lines[i + 1];
      const nm = next !== undefined ? ITEM.exec(next) : null;
      if (nm && nm[1].length === indent) i++;
      else break;
    }
  }
  return [list, i];
}

function leading(line) {
  return line.length - line.trimStart().length;
}

function cells(line) {
  let t = line.trim();
  if (t.startsWith("|")) t = t.slice(1);
  if (t.endsWith("|") && !t.endsWith("\\|")) t = t.slice(0, -1);
  return t.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

function tableBlock(lines, start, depth) {
  const head = cells(lines[start]);
  const aligns = cells(lines[start + 1]).map((c) =>
    c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : "",
  );
  const table = el("table");
  const tr = el("tr");
  head.forEach((c, n) => {
    const th = el("th", ...inline(c, depth));
    th.scope = "col";
    if (aligns[n]) th.style.textAlign = aligns[n];
    tr.append(th);
  });
  table.append(el("thead", tr));
  const body = el("tbody");
  let i = start + 2;
  while (i < lines.length && lines[i].trim() && lines[i].includes("|")) {
    const row = el("tr");
    const values = cells(lines[i]);
    head.forEach((_, n) => {
      const td = el("td", ...inline(values[n] ?? "", depth));
      if (aligns[n]) td.style.textAlign = aligns[n];
      row.append(td);
    });
    body.append(row);
    i++;
  }
  table.append(body);
  const wrap = el("div", table);
  wrap.className = "table-wrap";
  wrap.tabIndex = 0;
  return [wrap, i];
}

// -- inline ------------------------------------------------------------------------

const ESCAPABLE = "\\`*_{}[]()#+-.!~|>";
const BARE_URL = /^https?:\/\/[^\s<>"]*[^\s<>".,:;'")\]!?*_~]/i;
const DELIMS = [
  ["**", "strong"],
  ["__", "strong"],
  ["~~", "del"],
  ["*", "em"],
  ["_", "em"],
];

/** Inline Markdown of one line (or one cell) → array of nodes. */
export function inline(text, depth = 0) {
  const out = [];
  let buf = "";
  const push = (node) => {
    if (buf) out.push(document.createTextNode(buf));
    buf = "";
    out.push(node);
  };
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    if (ch === "\\" && i + 1 < text.length && ESCAPABLE.includes(text[i + 1])) {
      buf += text[i + 1];
      i += 2;
      continue;
    }
    if (ch === "`") {
      const run = /^`+/.exec(text.slice(i))[0];
      const end = text.indexOf(run, i + run.length);
      if (end > i) {
        let code = text.slice(i + run.length, end);
        if (code.startsWith(" ") && code.endsWith(" ") && code.trim()) code = code.slice(1, -1);
        push(el("code", code));
        i = end + run.length;
        continue;
      }
      buf += run;
      i += run.length;
      continue;
    }
    if (ch === "[" || (ch === "!" && text[i + 1] === "[")) {
      const parsed = parseLink(text, ch === "!" ? i + 1 : i);
      if (parsed) {
        const href = safeHref(parsed.url);
        const label = ch === "!" ? parsed.label || parsed.url : parsed.label;
        const children = depth < MAX_DEPTH ? inline(label, depth + 1) : [label];
        if (href) {
          push(link(href, children));
        } else {
          if (buf) out.push(document.createTextNode(buf));
          buf = "";
          out.push(...children); // an unsafe or relative target: the label alone, as text
        }
        i = parsed.end;
        continue;
      }
    }
    if ((ch === "h" || ch === "H") && (i === 0 || /[\s(]/.test(text[i - 1]))) {
      const m = BARE_URL.exec(text.slice(i));
      const href = m && safeHref(m[0]);
      if (href) {
        push(link(href, [m[0]]));
        i += m[0].length;
        continue;
      }
    }
    if (depth < MAX_DEPTH && (ch === "*" || ch === "_" || ch === "~")) {
      const span = emphasis(text, i, depth);
      if (span) {
        push(span.node);
        i = span.end;
        continue;
      }
    }
    buf += ch;
    i++;
  }
  if (buf) out.push(document.createTextNode(buf));
  return out;
}

function emphasis(text, i, depth) {
  for (const [delim, tag] of DELIMS) {
    if (!text.startsWith(delim, i)) continue;
    const after = text[i + delim.length];
    if (after === undefined || /\s/.test(after)) continue; // must open onto text
    if (delim[0] === "_" && i > 0 && /[\p{L}\p{N}]/u.test(text[i - 1])) continue; // snake_case
    let from = i + delim.length + 1;
    while (from <= text.length) {
      const end = text.indexOf(delim, from);
      if (end < 0) break;
      const before = text[end - 1];
      const next = text[end + delim.length];
      const closes =
        !/\s/.test(before) &&
        !(delim.length === 1 && next === delim) && // `*` does not close at `**`
        !(delim[0] === "_" && next !== undefined && /[\p{L}\p{N}]/u.test(next));
      if (closes) {
        const inner = text.slice(i + delim.length, end);
        return { node: el(tag, ...inline(inner, depth + 1)), end: end + delim.length };
      }
      from = end + 1;
    }
  }
  return null;
}

function parseLink(text, open) {
  // [label](url "title") with balanced brackets in the label
  let depth = 0;
  let close = -1;
  for (let j = open; j < text.length; j++) {
    const c = text[j];
    if (c === "\\") {
      j++;
      continue;
    }
    if (c === "[") depth++;
    else if (c === "]" && --depth === 0) {
      close = j;
      break;
    }
  }
  if (close < 0 || text[close + 1] !== "(") return null;
  let parens = 0;
  let end = -1;
  for (let j = close + 2; j < text.length; j++) {
    const c = text[j];
    if (c === "(") parens++;
    else if (c === ")") {
      if (parens === 0) {
        end = j;
        break;
      }
      parens--;
    } else if (c === "\n") break;
  }
  if (end < 0) return null;
  let target = text.slice(close + 2, end).trim();
  const titled = /^(\S+)\s+("[^"]*"|'[^']*')$/.exec(target);
  if (titled) target = titled[1];
  if (target.startsWith("<") && target.endsWith(">")) target = target.slice(1, -1);
  return { label: text.slice(open + 1, close), url: target, end: end + 1 };
}
