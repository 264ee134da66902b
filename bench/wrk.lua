-- One wrk script for every scenario; bench/run.py picks it with SCENARIO and passes data in
-- environment variables and files. done() prints one JSON line with the figures run.py collects.

local scenario = os.getenv("SCENARIO")
local tokens, ids, embeds = {}, {}, {}
local path = os.getenv("REQUEST_PATH") or "/"

local function split(list)
  local out = {}
  for item in string.gmatch(list or "", "[^,]+") do out[#out + 1] = item end
  return out
end

local function lines(file)
  local out = {}
  if file then
    for line in io.lines(file) do out[#out + 1] = line end
  end
  return out
end

function init(args)
  tokens = split(os.getenv("TOKENS"))
  ids = lines(os.getenv("IDS_FILE"))
  embeds = lines(os.getenv("EMBEDS_FILE"))
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

local priorities = { "low", "normal", "high", "urgent" }
local n = 0

local function bearer()
  n = n + 1
  return { ["Authorization"] = "Bearer " .. tokens[(n % #tokens) + 1] }
end

local function json_headers()
  local headers = bearer()
  headers["Content-Type"] = "application/json"
  return headers
end

local function pick(list) return list[math.random(#list)] end

local builders = {
  get_ticket = function() return wrk.format("GET", "/tickets/" .. pick(ids), bearer()) end,
  embed = function() return wrk.format("GET", "/tickets/embed/" .. pick(embeds), {}) end,
  path = function() return wrk.format("GET", path, bearer()) end,
  create = function()
    return wrk.format("POST", "/tickets/", json_headers(),
      '{"subject": "Benchmark ticket", "description": "created under load", "priority": "normal"}')
  end,
  patch_priority = function()
    return wrk.format("PATCH", "/tickets/" .. pick(ids), json_headers(),
      '{"priority": "' .. pick(priorities) .. '"}')
  end,
  comment = function()
    return wrk.format("POST", "/tickets/" .. pick(ids) .. "/comments", json_headers(),
      '{"body": "A reply written under load", "internal": false}')
  end,
  login = function()
    return wrk.format("POST", "/auth/token", { ["Content-Type"] = "application/x-www-form-urlencoded" },
      "username=customer" .. math.random(1000) .. "&password=bench-password-1")
  end,
}

-- 90% reads, 10% writes.
local mixed = {
  { 40, "get_ticket" }, { 30, "embed" }, { 10, "my" }, { 10, "filtered" }, { 5, "create" }, { 5, "patch_priority" },
}

function request()
  if scenario == "mixed" then
    local roll, acc = math.random(100), 0
    for _, entry in ipairs(mixed) do
      acc = acc + entry[1]
      if roll <= acc then
        if entry[2] == "my" then return wrk.format("GET", "/tickets/my", { ["Authorization"] = "Bearer " .. tokens[#tokens] }) end
        if entry[2] == "filtered" then return wrk.format("GET", "/tickets/?status=open&priority=high&limit=50", { ["Authorization"] = "Bearer " .. tokens[1] }) end
        if entry[2] == "create" then
          return wrk.format("POST", "/tickets/", { ["Authorization"] = "Bearer " .. tokens[#tokens], ["Content-Type"] = "application/json" },
            '{"subject": "Benchmark ticket", "description": "created under load"}')
        end
        if entry[2] == "patch_priority" then
          return wrk.format("PATCH", "/tickets/" .. pick(ids), { ["Authorization"] = "Bearer " .. tokens[1], ["Content-Type"] = "application/json" },
            '{"priority": "' .. pick(priorities) .. '"}')
        end
        if entry[2] == "get_ticket" then return wrk.format("GET", "/tickets/" .. pick(ids), { ["Authorization"] = "Bearer " .. tokens[1] }) end
        return builders[entry[2]]()
      end
    end
  end
  return builders[scenario]()
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local socket = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, "p999_ms": %.3f, "non2xx": %d, "socket_errors": %d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    summary.errors.status, socket))
end
