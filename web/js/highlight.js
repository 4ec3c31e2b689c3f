// Syntax colours for fenced code blocks, by highlight.js (vendored: web/vendor, built by
// scripts/vendor-web.sh from @highlightjs/cdn-assets).
//
// highlight.js returns HTML with the code's text escaped. It is still not put in the page
// as HTML: it is parsed in an inert document (no scripts run, nothing loads) and copied
// node by node, keeping only text and <span> elements with highlight.js class names.

import hljs from "../vendor/highlight.min.js";

const CLASS = /^(hljs-[\w-]+|[a-z]+_+)$/;
const MAX_CHARS = 100_000; // beyond this, plain text (highlighting cost grows with size)

/**
 * Colour `code` (a <code> element holding `text`) when `lang` is a known language.
 * @param {HTMLElement} code
 * @param {string} text
 * @param {string} lang
 */
export function highlightCode(code, text, lang) {
  if (!lang || text.length > MAX_CHARS || !hljs.getLanguage(lang)) return;
  let html;
  try {
    html = hljs.highlight(text, { language: lang, ignoreIllegals: true }).value;
  } catch {
    return; // a grammar error: plain text is fine
  }
  const doc = new DOMParser().parseFromString(`<pre>${html}</pre>`, "text/html");
  const pre = doc.body.firstElementChild;
  if (!pre) return;
  code.replaceChildren(...copy(pre.childNodes));
  code.classList.add("hljs");
}

/** @param {NodeListOf<ChildNode>} nodes */
function copy(nodes) {
  const out = [];
  for (const node of nodes) {
    if (node.nodeType === Node.TEXT_NODE) {
      out.push(document.createTextNode(node.textContent ?? ""));
    } else if (node instanceof Element && node.tagName === "SPAN") {
      const span = document.createElement("span");
      const classes = [...node.classList].filter((c) => CLASS.test(c));
      if (classes.length) span.className = classes.join(" ");
      span.append(...copy(node.childNodes));
      out.push(span);
    } else {
      out.push(document.createTextNode(node.textContent ?? ""));
    }
  }
  return out;
}
