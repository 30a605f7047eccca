-- Cheaper writes (docs/benchmarks.md). An order's expense is found through `orders`; only
-- its refunds need finding among the entries, so index just the lines that credit a wallet
-- for an order (a refund's; an expense's wallet line is a debit) instead of every order line.
DROP INDEX entries_by_order;
CREATE INDEX refund_lines_by_order ON entries (ledger, order_id)
    WHERE order_id IS NOT NULL AND amount > 0 AND substr(account, 1, 7) = 'wallet:';
