-- Each day's total spend, kept by the ledger in the same transaction as each record: the
-- budget and cost alerts read it in O(1) instead of summing every contact's row of the day.
CREATE TABLE IF NOT EXISTS usage_day_totals (
    day TEXT PRIMARY KEY,
    cost_pico_usd BIGINT NOT NULL DEFAULT 0
);

INSERT INTO usage_day_totals (day, cost_pico_usd)
SELECT day, SUM(cost_pico_usd) FROM usage_daily GROUP BY day;
