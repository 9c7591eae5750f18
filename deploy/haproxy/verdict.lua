-- Verdict forward auth for HAProxy 2.6, with nothing but HAProxy's own Lua API (core.httpclient).
--
--   http-request lua.verdict-auth <url> <caller key header> <client headers>
--
-- asks Verdict's forward-auth front at <url> about the client's request, then either lets it on with
-- the identity headers of the decision, or answers the client itself with Verdict's deny. Only an allow
-- sets the variable txn.verdict_allowed; haproxy.cfg denies every request without it, so an error in
-- this file (which HAProxy logs and then carries on past) can never let a request through.
--
--   <url>                the forward-auth front, e.g. http://127.0.0.1:8081/v1/forward-auth (in
--                        haproxy.cfg, the "verdict" listen section, which holds Verdict's timeouts)
--   <caller key header>  the header of Verdict's callers.api_keys.header, normally x-verdict-key; its
--                        value is the environment variable VERDICT_CALLER_KEY
--   <client headers>     the client's headers Verdict reads as they are, comma-separated: the
--                        Authorization header, forward_auth.api_key_header, forward_auth.context_headers
--
-- See deploy/haproxy/README.md.

local CALLER_KEY = os.getenv("VERDICT_CALLER_KEY")
if CALLER_KEY == nil or CALLER_KEY == "" then
    error("verdict.lua: VERDICT_CALLER_KEY must hold the caller key Verdict accepts from this proxy")
end

-- The httpclient's own timeout, a backstop only: the listen section <url> points at answers first,
-- with a 504 after its "timeout server". (The httpclient retries a timed-out request 3 times, which is
-- why Verdict's timeout is not this one.)
local BACKSTOP_TIMEOUT_MS = 10000

-- The headers this action sets on the question itself; never copied from the client.
local FORWARDING = {
    ["x-forwarded-method"] = true,
    ["x-original-method"] = true,
    ["x-forwarded-uri"] = true,
    ["x-original-uri"] = true,
    ["x-forwarded-host"] = true,
    ["host"] = true,
    ["x-forwarded-for"] = true,
    ["x-real-ip"] = true,
    ["content-length"] = true,
    ["transfer-encoding"] = true,
    ["connection"] = true,
}

-- The headers of Verdict's allow that describe the answer, not the request: every other header of an
-- allow is an identity header (one of Verdict's `headers:`) or x-verdict-decision-id, and goes to the
-- upstream.
local ANSWER_ONLY = {
    ["content-length"] = true,
    ["content-type"] = true,
    ["date"] = true,
    ["connection"] = true,
    ["keep-alive"] = true,
    ["transfer-encoding"] = true,
    ["server"] = true,
    ["vary"] = true,
    ["cache-control"] = true,
    ["x-envoy-auth-headers-to-remove"] = true,
}

-- The statuses of Verdict's denies, answered to the client as Verdict wrote them.
local DENIES = { [400] = true, [401] = true, [403] = true, [503] = true }

-- The values of a header as HAProxy hands them to Lua (a table indexed from 0), in order.
local function values_of(field)
    local values = {}
    if type(field) ~= "table" then
        return values
    end
    local indexes = {}
    for index in pairs(field) do
        if type(index) == "number" then
            indexes[#indexes + 1] = index
        end
    end
    table.sort(indexes)
    for _, index in ipairs(indexes) do
        values[#values + 1] = field[index]
    end
    return values
end

-- "a, b,c" as { "a", "b", "c" }, lower-case.
local function names_of(list)
    local names = {}
    for name in string.gmatch(list or "", "[^,%s]+") do
        names[#names + 1] = string.lower(name)
    end
    return names
end

local parsed_lists = {}

local function client_headers_of(list)
    local names = parsed_lists[list]
    if names == nil then
        names = {}
        for _, name in ipairs(names_of(list)) do
            if not FORWARDING[name] then
                names[#names + 1] = name
            end
        end
        parsed_lists[list] = names
    end
    return names
end

local function json_string(text)
    return '"' .. string.gsub(text, '[%c"\\]', function(c)
        return string.format("\\u%04x", string.byte(c))
    end) .. '"'
end

-- Ends the transaction with an answer of the proxy's own, when Verdict gave none it can pass on.
local function fail(txn, status, error, description)
    local headers = { ["content-type"] = { "application/json" } }
    if status == 503 then
        headers["retry-after"] = { "1" }
    end
    txn:done({
        status = status,
        headers = headers,
        body = '{"error":' .. json_string(error) .. ',"error_description":' .. json_string(description) .. "}",
    })
end

local function first(headers, name)
    return values_of(headers[name])[1]
end

local function verdict_auth(txn, url, caller_key_header, client_headers)
    local request_headers = txn.http:req_get_headers()

    -- The question: the client's own Authorization, API key and context headers as they are (every
    -- copy, so that Verdict refuses one sent twice), then what this proxy knows of the request, set
    -- here whatever the client sent.
    local question = {}
    for _, name in ipairs(client_headers_of(client_headers)) do
        local values = values_of(request_headers[name])
        if #values > 0 then
            question[name] = values
        end
    end
    question["x-forwarded-method"] = { txn.sf:method() or "" }
    question["x-forwarded-uri"] = { txn.sf:pathq() or "" }
    question["x-forwarded-host"] = { txn.sf:req_fhdr("host") or "" }
    question["x-forwarded-for"] = { txn.sf:src() or "" }
    question[string.lower(caller_key_header)] = { CALLER_KEY }

    local answer = core.httpclient():get({
        url = url,
        headers = question,
        timeout = BACKSTOP_TIMEOUT_MS,
    })
    local status = tonumber(answer and answer.status) or 0
    local headers = (answer and answer.headers) or {}
    local body = (answer and answer.body) or ""

    -- An allow carries Verdict's decision id; a 200 without one is not Verdict's.
    if status == 200 and first(headers, "x-verdict-decision-id") ~= nil then
        -- Every identity header: those the decision sets and those Verdict names as unset. The client's
        -- copies of all of them go, whether or not the decision sets one.
        local identity = {}
        for name, field in pairs(headers) do
            name = string.lower(name)
            if not ANSWER_ONLY[name] then
                identity[name] = values_of(field)
            end
        end
        for _, field in ipairs(values_of(headers["x-envoy-auth-headers-to-remove"])) do
            for _, name in ipairs(names_of(field)) do
                identity[name] = identity[name] or {}
            end
        end
        for name, values in pairs(identity) do
            txn.http:req_del_header(name)
            for _, value in ipairs(values) do
                txn.http:req_add_header(name, value)
            end
        end
        txn:set_var("txn.verdict_allowed", true)
        return
    end

    local content_type = string.lower(first(headers, "content-type") or "")
    if DENIES[status] and string.find(content_type, "application/json", 1, true) == 1 then
        -- Verdict's deny: its status, challenge, Retry-After and error, to the client.
        local reply = { ["content-type"] = { "application/json" } }
        local challenges = values_of(headers["www-authenticate"])
        if #challenges > 0 then
            reply["www-authenticate"] = challenges
        end
        local retry_after = values_of(headers["retry-after"])
        if #retry_after > 0 then
            reply["retry-after"] = retry_after
        elseif status == 503 then
            reply["retry-after"] = { "1" }
        end
        txn:done({ status = status, headers = reply, body = body })
        return
    end

    if status == 504 then
        -- Verdict is slower than the listen section's "timeout server".
        txn:Warning("verdict-auth: Verdict did not answer in time (504); denying")
        fail(txn, 503, "temporarily_unavailable", "the authorization service did not answer in time")
        return
    end
    if status == 0 or status == 502 or status == 503 then
        -- Verdict is down (or marked down by the health check), or does not answer HTTP.
        txn:Warning("verdict-auth: Verdict is unavailable (" .. status .. "); denying")
        fail(txn, 503, "temporarily_unavailable", "the authorization service is unavailable")
        return
    end
    -- Anything else (500 unauthenticated_caller: the caller key is wrong) is this deployment's fault.
    txn:Warning("verdict-auth: unexpected answer " .. status .. " from Verdict: " .. string.sub(body, 1, 200))
    fail(txn, 500, "server_error", "the authorization service refused the proxy's question")
end

core.register_action("verdict-auth", { "http-req" }, verdict_auth, 3)
