-- wrk request generator for `python -m bench.api` (which writes the arguments; see there).
--
--   wrk -t2 -c64 -d15s -s bench/api.lua URL -- MODE KEY WALLETS MERCHANTS PREFIX BATCH DATAFILE
--
-- MODE: expense | mixed | batch | statement | balances (GET a random wallet's balances) |
-- order / transaction (GET a random line's order, or its expense, from DATAFILE) |
-- events (GET a page of 100 of the log, after a random seq below WALLETS).
-- Every write carries a unique Idempotency-Key (PREFIX, the wrk thread and a per-thread
-- counter) and pays a unique order id. Wallets are
-- "u0".."u{WALLETS-1}", merchants "m0".."m{MERCHANTS-1}", both picked uniformly at random.
-- DATAFILE ("-" for none): for mixed, lines "EXPENSE_ID ORDER_ID" to refund 0.01 of (and
-- for order and transaction, to read); for
-- statement, a user id on the first line, then cursors ("-" for the first page).
-- done() prints one line "BENCH_JSON {...}" (latencies in microseconds) for the harness, and
-- "BENCH_ERROR STATUS BODY" for the first answer >= 400 of each thread.

local threads = {}
local counter = 0
local mode, wallets, merchants, prefix, batch
local auth
local refunds = {}
local statement_user
local cursors = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  mode = args[1]
  auth = "Bearer " .. args[2]
  wallets = tonumber(args[3])
  merchants = tonumber(args[4])
  prefix = args[5] .. "-" .. tostring(tid)
  batch = tonumber(args[6])
  local datafile = args[7]
  math.randomseed(tid * 7919 + os.time())
  if datafile ~= nil and datafile ~= "-" then
    local first = true
    for line in io.lines(datafile) do
      if mode == "statement" then
        if first then
          statement_user = line
        else
          table.insert(cursors, line)
        end
      else
        local expense_id, order_id = line:match("^(%S+)%s+(%S+)$")
        table.insert(refunds, { expense_id, order_id })
      end
      first = false
    end
  end
end

local function next_key()
  counter = counter + 1
  return prefix .. "-" .. tostring(counter)
end

local function expense_body(key)
  return '{"user_id":"u' .. tostring(math.random(wallets) - 1)
    .. '","currency":"USD","orders":[{"order_id":"' .. key
    .. '","amount":"1.00","merchant_id":"m' .. tostring(math.random(merchants) - 1) .. '"}]}'
end

local function post(path, key, body)
  return wrk.format("POST", path, {
    ["Authorization"] = auth,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = key,
  }, body)
end

function request()
  if mode == "expense" then
    local key = next_key()
    return post("/v1/expenses", key, expense_body(key))
  elseif mode == "mixed" then
    local key = next_key()
    local r = math.random()
    if r < 0.70 or #refunds == 0 then
      return post("/v1/expenses", key, expense_body(key))
    elseif r < 0.85 then
      return post("/v1/recharges", key, '{"user_id":"u' .. tostring(math.random(wallets) - 1)
        .. '","amount":"1.00","currency":"USD","gateway":"paypal"}')
    else
      local target = refunds[math.random(#refunds)]
      return post("/v1/refunds", key, '{"expense_id":"' .. target[1] .. '","order_id":"'
        .. target[2] .. '","amount":"0.01","reason":"bench"}')
    end
  elseif mode == "batch" then
    local commands = {}
    for i = 1, batch do
      local key = next_key()
      commands[i] = '{"type":"expense","idempotency_key":"' .. key .. '",'
        .. expense_body(key):sub(2)
    end
    return post("/v1/batch", next_key(), '{"commands":[' .. table.concat(commands, ",") .. "]}")
  elseif mode == "statement" then
    local path = "/v1/users/" .. statement_user .. "/statement?currency=USD&limit=100"
    local cursor = cursors[math.random(#cursors)]
    if cursor ~= "-" then
      path = path .. "&cursor=" .. cursor
    end
    return wrk.format("GET", path, { ["Authorization"] = auth })
  elseif mode == "order" then
    local target = refunds[math.random(#refunds)]
    return wrk.format("GET", "/v1/orders/" .. target[2], { ["Authorization"] = auth })
  elseif mode == "transaction" then
    local target = refunds[math.random(#refunds)]
    return wrk.format("GET", "/v1/transactions/" .. target[1], { ["Authorization"] = auth })
  elseif mode == "events" then
    local path = "/v1/events?limit=100&after_seq=" .. tostring(math.random(wallets) - 1)
    return wrk.format("GET", path, { ["Authorization"] = auth })
  elseif mode == "balances" then
    local path = "/v1/users/u" .. tostring(math.random(wallets) - 1) .. "/balances"
    return wrk.format("GET", path, { ["Authorization"] = auth })
  end
  error("unknown mode " .. tostring(mode))
end

first_error = ""

function response(status, headers, body)
  if status >= 400 and first_error == "" then
    first_error = tostring(status) .. " " .. body:sub(1, 200)
  end
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    local seen = thread:get("first_error")
    if seen ~= nil and seen ~= "" then
      io.write("BENCH_ERROR ", seen, "\n")
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
      .. '"status":%d,"timeout":%d,"p50":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f,'
      .. '"max":%.1f,"mean":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
