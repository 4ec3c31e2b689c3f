// The remaining daily budget (GET /usage/me), shown next to the user name when one is set.
// Self-contained on purpose: it reads the page's stored token and touches one element.

const AUTH_KEY = "llm-relay.auth"; // where app.js keeps {token, ...} for this tab
const REFRESH_MS = 30000;
const TOKEN_CHECK_MS = 2000;
let timer = null; // polls only while a budget is set: no budget, no load on the ledger
let seenToken = null;

function currentToken() {
  try {
    return JSON.parse(sessionStorage.getItem(AUTH_KEY) || "null")?.token ?? null;
  } catch {
    return null;
  }
}

/** "1,234 tokens · $0.42 left today" from /usage/me, or null when no budget is set. */
export function remainingText(usage) {
  const budget = usage?.budget ?? {};
  const today = usage?.today ?? {};
  const parts = [];
  if (Number.isFinite(budget.tokens_per_day)) {
    const used = (today.prompt_tokens ?? 0) + (today.completion_tokens ?? 0);
    const left = Math.max(0, budget.tokens_per_day - used);
    parts.push(`${left.toLocaleString("en")} tokens`);
  }
  if (Number.isFinite(budget.cost_per_day)) {
    const left = Math.max(0, budget.cost_per_day - (today.cost ?? 0));
    parts.push(`$${left.toFixed(2)}`);
  }
  return parts.length ? `${parts.join(" · ")} left today` : null;
}

async function refresh(element) {
  const token = currentToken();
  seenToken = token;
  if (!token || document.hidden) {
    if (!token) element.hidden = true;
    return;
  }
  try {
    const response = await fetch("usage/me", { headers: { Authorization: `Bearer ${token}` } });
    if (!response.ok) {
      element.hidden = true;
      return;
    }
    const text = remainingText(await response.json());
    element.textContent = text ?? "";
    element.hidden = text === null;
    if (text === null && timer !== null) {
      clearInterval(timer);
      timer = null;
    } else if (text !== null && timer === null) {
      timer = setInterval(() => refresh(element), REFRESH_MS);
    }
  } catch {
    /* offline for a moment: keep what is shown */
  }
}

function startBudget() {
  const element = document.getElementById("budget");
  if (!element) return;
  refresh(element);
  document.addEventListener("visibilitychange", () => refresh(element));
  // A sign-in, sign-out or renewed token in this tab (no network while it stays the same).
  setInterval(() => {
    if (currentToken() !== seenToken) refresh(element);
  }, TOKEN_CHECK_MS);
}

if (typeof document !== "undefined") {
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", startBudget);
  else startBudget();
}
