-- embed.lua — wrk script: POST /api/v1/embed like the embedding service's clients.
--
--   wrk -t2 -c20 -d5s -s lua/embed.lua http://127.0.0.1:8080
--
-- Requests carry JSON bodies {"text", "model"} whose text lengths are a realistic
-- mix of 20..2000 characters (mostly short queries, some passages, a few long
-- documents), `content-type: application/json` and a per-user `x-user-id` from a
-- pool of 1000 users. Everything is drawn from a fixed seed (per wrk thread), so
-- two runs with the same -t send the same requests. Requests are generated once
-- in init() and replayed round-robin (request() must be cheap).
--
-- Each response's `x-pod` header is counted per pod; done() adds up the counts of
-- all threads and prints a per-pod breakdown, plus machine-readable lines
--   x-pod-count<TAB>POD<TAB>N        (POD "-" = response without x-pod)
--   status-count<TAB>CODE<TAB>N
--   canary-header-fraction<TAB>F     (share of requests sent with x-canary: always)
--
-- Knobs (environment): EMBED_PATH [/api/v1/embed], EMBED_MODEL [embed-small-v1],
-- EMBED_SEED [42], EMBED_POOL [4096 distinct requests per thread],
-- EMBED_USERS [1000]. A script that sets the global `canary_fraction` before
-- loading this file (see canary-header.lua) adds `x-canary: always` to that share
-- of the requests.

local PATH = os.getenv("EMBED_PATH") or "/api/v1/embed"
local MODEL = os.getenv("EMBED_MODEL") or "embed-small-v1"
local SEED = tonumber(os.getenv("EMBED_SEED") or "42")
local POOL = tonumber(os.getenv("EMBED_POOL") or "4096")
local USERS = tonumber(os.getenv("EMBED_USERS") or "1000")
local CANARY_FRACTION = canary_fraction or 0

local WORDS = {
  "embedding", "vector", "model", "search", "query", "document", "retrieval", "semantic",
  "the", "a", "of", "and", "to", "in", "for", "with", "on", "is", "that", "by", "from",
  "customer", "invoice", "shipping", "refund", "policy", "account", "password", "reset",
  "kubernetes", "cluster", "latency", "throughput", "canary", "deployment", "rollback",
  "neural", "network", "transformer", "attention", "token", "sentence", "paragraph",
  "weather", "forecast", "recipe", "chicken", "garlic", "travel", "hotel", "flight",
  "contract", "clause", "liability", "warranty", "payment", "schedule", "quarterly",
  "report", "revenue", "growth", "market", "analysis", "risk", "portfolio", "index",
  "patient", "symptom", "treatment", "dosage", "clinical", "trial", "results",
  "how", "what", "why", "when", "where", "can", "does", "should", "best", "way",
}

-- Text length: 50% short queries (20..200), 35% passages (200..800),
-- 15% long documents (800..2000).
local function text_length()
  local r = math.random()
  if r < 0.50 then return math.random(20, 200) end
  if r < 0.85 then return math.random(200, 800) end
  return math.random(800, 2000)
end

local function make_text(n)
  local parts, len = {}, 0
  while len < n do
    local w = WORDS[math.random(#WORDS)]
    parts[#parts + 1] = w
    len = len + #w + 1
  end
  local s = table.concat(parts, " ")
  return s:sub(1, n) -- plain ASCII letters and spaces: no JSON escaping needed
end

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("id", thread_count)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(SEED + 7919 * (id or 1))
  pod_counts = {}
  status_counts = {}
  requests_pool = {}
  canary_sent = 0
  for i = 1, POOL do
    local headers = {
      ["Content-Type"] = "application/json",
      ["x-user-id"] = string.format("user-%04d", math.random(1, USERS)),
    }
    if CANARY_FRACTION > 0 and math.random() < CANARY_FRACTION then
      headers["x-canary"] = "always"
      canary_sent = canary_sent + 1
    end
    local body = string.format('{"text":"%s","model":"%s"}', make_text(text_length()), MODEL)
    requests_pool[i] = wrk.format("POST", PATH, headers, body)
  end
  canary_pool_fraction = canary_sent / POOL
  -- start each thread at a different place in its pool
  next_index = (id or 1) % POOL
end

function request()
  next_index = next_index % POOL + 1
  return requests_pool[next_index]
end

local function header(headers, name)
  local v = headers[name]
  if v then return v end
  for k, val in pairs(headers) do
    if string.lower(k) == name then return val end
  end
  return nil
end

function response(status, headers, body)
  local pod = header(headers, "x-pod") or "-"
  pod_counts[pod] = (pod_counts[pod] or 0) + 1
  local s = tostring(status)
  status_counts[s] = (status_counts[s] or 0) + 1
end

function done(summary, latency, requests)
  local pods, statuses = {}, {}
  local total, canary_fraction_sum = 0, 0
  for _, thread in ipairs(threads) do
    for pod, n in pairs(thread:get("pod_counts") or {}) do
      pods[pod] = (pods[pod] or 0) + n
      total = total + n
    end
    for code, n in pairs(thread:get("status_counts") or {}) do
      statuses[code] = (statuses[code] or 0) + n
    end
    canary_fraction_sum = canary_fraction_sum + (thread:get("canary_pool_fraction") or 0)
  end
  local names = {}
  for pod in pairs(pods) do names[#names + 1] = pod end
  table.sort(names)
  io.write("\nresponses per pod (x-pod header, all threads):\n")
  io.write(string.format("  %-24s %10s %8s\n", "pod", "responses", "share"))
  for _, pod in ipairs(names) do
    local label = pod == "-" and "(no x-pod header)" or pod
    io.write(string.format("  %-24s %10d %7.2f%%\n", label, pods[pod], 100 * pods[pod] / math.max(total, 1)))
  end
  io.write(string.format("  %-24s %10d\n", "total", total))
  local codes = {}
  for code in pairs(statuses) do codes[#codes + 1] = code end
  table.sort(codes)
  local line = {}
  for _, code in ipairs(codes) do line[#line + 1] = code .. ": " .. statuses[code] end
  io.write("  status codes: " .. table.concat(line, ", ") .. "\n")
  local cf = #threads > 0 and canary_fraction_sum / #threads or 0
  if cf > 0 then
    io.write(string.format("  requests sent with x-canary: always: %.2f%%\n", 100 * cf))
  end
  for _, pod in ipairs(names) do io.write(string.format("x-pod-count\t%s\t%d\n", pod, pods[pod])) end
  for _, code in ipairs(codes) do io.write(string.format("status-count\t%s\t%d\n", code, statuses[code])) end
  io.write(string.format("canary-header-fraction\t%.6f\n", cf))
end
