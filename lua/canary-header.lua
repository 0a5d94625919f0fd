-- canary-header.lua — wrk script: like embed.lua, but ~10% of the requests carry
-- `x-canary: always` (a route override rule sends those to the canary cluster).
--
--   wrk -t2 -c20 -d5s -s lua/canary-header.lua http://127.0.0.1:8080
--
-- The share is drawn per request from the fixed seed when the request pool is
-- built; done() prints the exact share sent. With a canary weight of w (0..1),
-- the expected canary share of responses is  f + (1 - f) * w  (f = that share).
-- CANARY_FRACTION in the environment overrides 0.10.

canary_fraction = tonumber(os.getenv("CANARY_FRACTION") or "0.10")

-- load embed.lua from this script's own directory (wrk may run from anywhere)
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "embed.lua")
