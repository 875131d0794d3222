-- Shared helpers for the headless Neovim tests. A test is a function run as a coroutine
-- from Neovim's main loop: `H.wait_for` yields to the main loop (so typeahead from
-- `feedkeys`, autocommands, timers and LSP replies are processed) and resumes from a timer.
-- Any error fails the test with `cquit 1`; returning from the function passes it.
local H = {}

H.tests_dir = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h")
H.plugin_dir = vim.fn.fnamemodify(H.tests_dir, ":h")
H.repo = vim.fn.fnamemodify(H.plugin_dir, ":h:h")
H.model = vim.env.NIB_TEST_MODEL or (H.repo .. "/models/smollm2-135m-instruct")
H.nib = vim.env.NIB_TEST_BIN or (H.repo .. "/target/release/nib")

local name = "?"
local started = vim.uv.hrtime()

function H.log(msg)
  io.stdout:write(("[%6.2fs] %s\n"):format((vim.uv.hrtime() - started) / 1e9, msg))
  io.stdout:flush()
end

function H.fail(msg)
  io.stderr:write(("FAIL %s: %s\n"):format(name, tostring(msg)))
  io.stderr:flush()
  vim.cmd("cquit 1")
end

--- Options for `require("nib").setup()`: the real default model, 2 threads, no messages.
function H.nib_opts(extra)
  return vim.tbl_deep_extend("force", {
    cmd = { H.nib },
    settings = { modelPath = H.model, threads = 2, requestTimeoutMs = 60000 },
    status_messages = false,
    progress_messages = false,
  }, extra or {})
end

local co

local function resume()
  local ok, err = coroutine.resume(co)
  if not ok then
    return H.fail(debug.traceback(co, err))
  end
  if coroutine.status(co) == "dead" then
    H.log("PASS " .. name)
    vim.cmd("qall!")
  end
end

--- Runs `fn` as the test `test_name`, failing it after `budget_ms`.
function H.run(test_name, fn, budget_ms)
  name = test_name
  co = coroutine.create(fn)
  local watchdog = vim.uv.new_timer()
  watchdog:start(budget_ms or 100000, 0, vim.schedule_wrap(function()
    H.fail("took longer than " .. (budget_ms or 100000) .. " ms")
  end))
  vim.schedule(resume)
end

--- Yields to the main loop for `ms` milliseconds.
function H.sleep(ms)
  vim.defer_fn(resume, ms)
  coroutine.yield()
end

--- Waits until `cond()` is truthy (polled every 50 ms) and returns its value.
function H.wait_for(what, cond, timeout_ms)
  local deadline = vim.uv.hrtime() + (timeout_ms or 30000) * 1e6
  while true do
    local ok, value = pcall(cond)
    if ok and value then
      return value
    end
    if vim.uv.hrtime() > deadline then
      error(("timed out waiting for %s%s"):format(what, ok and "" or (" (" .. tostring(value) .. ")")), 2)
    end
    H.sleep(50)
  end
end

function H.eq(expected, actual, what)
  if not vim.deep_equal(expected, actual) then
    error(("%s: expected %s, got %s"):format(what or "value", vim.inspect(expected), vim.inspect(actual)), 2)
  end
end

function H.truthy(value, what)
  if not value then
    error(what or "expected a truthy value", 2)
  end
  return value
end

--- Types `keys` as if by the user (mappings apply), processed by the main loop.
function H.feed(keys)
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(keys, true, false, true), "mt", false)
end

--- A scratch copy of examples/shop.
function H.shop_copy()
  local dir = vim.fn.tempname() .. "-shop"
  vim.fn.mkdir(dir, "p")
  for _, file in ipairs({ "cart.py", "pricing.py" }) do
    vim.fn.writefile(vim.fn.readfile(H.repo .. "/examples/shop/" .. file, "b"), dir .. "/" .. file, "b")
  end
  return dir
end

--- The nib client attached to `bufnr`, once its model is ready.
function H.wait_ready(bufnr, timeout_ms)
  local lsp = require("nib.lsp")
  return H.wait_for("nib attached with the model ready", function()
    local client = lsp.clients(bufnr)[1]
    local status = client and lsp.status[client.id]
    if status and status.state == "error" then
      error("model error: " .. tostring(status.message))
    end
    return client and client.initialized and status and status.state == "ready" and client
  end, timeout_ms or 60000)
end

function H.lines(bufnr)
  return vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)
end

--- The ghost text extmark of the nib namespace in `bufnr`: its text (virt_text and
--- virt_lines joined with newlines) and details; nil when none.
function H.ghost(bufnr)
  local ns = vim.api.nvim_get_namespaces()["nib"]
  if not ns then
    return nil
  end
  local marks = vim.api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })
  if #marks == 0 then
    return nil
  end
  local details = marks[1][4]
  local function join(chunks)
    local out = {}
    for _, chunk in ipairs(chunks or {}) do
      out[#out + 1] = chunk[1]
    end
    return table.concat(out)
  end
  local parts = { join(details.virt_text) }
  for _, line in ipairs(details.virt_lines or {}) do
    parts[#parts + 1] = join(line)
  end
  return { text = table.concat(parts, "\n"), row = marks[1][2], col = marks[1][3], details = details, count = #marks }
end

--- Waits for a ghost text that is shown and settled (no request pending) in Insert mode.
function H.wait_ghost(bufnr, what, timeout_ms)
  local ghost = require("nib.ghost")
  return H.wait_for(what or "ghost text", function()
    local g = H.ghost(bufnr)
    return g
      and g.details.virt_text
      and vim.api.nvim_get_mode().mode == "i"
      and not ghost.is_busy(bufnr)
      and require("nib").is_visible()
      and g
  end, timeout_ms or 45000)
end

return H
