// The remaining daily budget (GET /usage/me), shown next to the user name when one is set.
// Self-contained on purpose: it reads the page's stored token and touches one element.

const AUTH_KEY = "llm-relay.auth"; // where app.js keeps {token, ...} for this tab
const REFRESH_MS = 15000;

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
  } catch {
    /* offline for a moment: keep what is shown */
  }
}

function startBudget() {
  const element = document.getElementById("budget");
  if (!element) return;
  refresh(element);
  setInterval(() => refresh(element), REFRESH_MS);
  document.addEventListener("visibilitychange", () => refresh(element));
}

if (typeof document !== "undefined") {
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", startBudget);
  else startBudget();
}
