--- `:checkhealth nib`: Neovim version, the server binary and its version, the model (as
--- `nib/status` reports it), ONNX Runtime, and what generated tests run with (`nib/status`'s
--- `verification`: the toolchains found, whether tests are run).
local config = require("nib.config")
local lsp = require("nib.lsp")

local health = vim.health

local M = {}

--- Starts `cmd` as a short-lived LSP server for the current directory, initializes it with
--- `settings`, and waits for a final `nib/status` (ready or error) that also says what tests
--- run with. Returns the last status and the server's stderr.
---@param cmd string[]
---@param settings table
---@param timeout_ms integer
---@return table? status, string stderr
function M.probe(cmd, settings, timeout_ms)
  local status, initialized
  local stdout, stderr = "", {}
  local function on_stdout(_, data)
    if not data then
      return
    end
    stdout = stdout .. data
    while true do
      local header_end = stdout:find("\r\n\r\n", 1, true)
      if not header_end then
        return
      end
      local length = tonumber(stdout:sub(1, header_end):match("Content%-Length: *(%d+)"))
      if not length or #stdout < header_end + 3 + length then
        return
      end
      local body = stdout:sub(header_end + 4, header_end + 3 + length)
      stdout = stdout:sub(header_end + 4 + length)
      local ok, msg = pcall(vim.json.decode, body)
      if ok and type(msg) == "table" then
        if msg.method == "nib/status" and type(msg.params) == "table" then
          status = msg.params
        elseif msg.id == 1 then
          initialized = true
        end
      end
    end
  end
  local ok, proc = pcall(vim.system, cmd, {
    stdin = true,
    stdout = on_stdout,
    stderr = function(_, data)
      if data then
        stderr[#stderr + 1] = data
      end
    end,
    env = { NIB_LOG = "info" },
    text = false,
  })
  if not ok then
    return nil, tostring(proc)
  end
  local function send(msg)
    local body = vim.json.encode(msg)
    pcall(proc.write, proc, ("Content-Length: %d\r\n\r\n%s"):format(#body, body))
  end
  send({
    jsonrpc = "2.0",
    id = 1,
    method = "initialize",
    params = {
      processId = vim.fn.getpid(),
      rootUri = vim.uri_from_fname(vim.fn.getcwd()),
      capabilities = vim.empty_dict(),
      initializationOptions = settings,
    },
  })
  local function exited()
    return proc:is_closing()
  end
  vim.wait(timeout_ms, function()
    return initialized or exited()
  end, 20)
  send({ jsonrpc = "2.0", method = "initialized", params = vim.empty_dict() })
  vim.wait(timeout_ms, function()
    return (status ~= nil and status.state ~= "loading" and status.state ~= "unloaded") or exited()
  end, 50)
  -- The toolchain report comes with a status of its own, usually before the model is ready.
  vim.wait(2000, function()
    return (status ~= nil and status.verification ~= nil) or exited()
  end, 20)
  send({ jsonrpc = "2.0", id = 2, method = "shutdown", params = vim.NIL })
  send({ jsonrpc = "2.0", method = "exit" })
  pcall(proc.write, proc, nil)
  proc:wait(3000) -- kills the server if it has not exited by then
  return status, table.concat(stderr)
end

--- Reports one `nib/status`.
local function report_status(status, where)
  if status.state == "ready" then
    health.ok(
      ("model ready%s: %s (%s), loaded in %s ms, context %s tokens"):format(
        where,
        tostring(status.name),
        tostring(status.model),
        tostring(status.loadMs),
        tostring(status.contextLength)
      )
    )
  elseif status.state == "error" then
    health.error("model failed to load" .. where .. ": " .. tostring(status.message), {
      "Set `settings.modelPath` to a model directory (see models/README.md in the nib checkout).",
      "ONNX Runtime: set `settings.onnxRuntimePath` or $ORT_DYLIB_PATH to libonnxruntime.so (>= 1.31).",
    })
  else
    health.info("model " .. tostring(status.state) .. where .. (status.model and (": " .. status.model) or ""))
  end
end

--- Reports `nib/status`'s `verification`: whether generated tests are run, and with what.
local function report_verification(verification)
  health.start("nib: generated tests")
  if type(verification) ~= "table" then
    health.info("nib sent no toolchain report (nib/status has no `verification`)")
    return
  end
  if verification.enabled then
    health.ok(
      ("Generate unit tests runs the candidate tests in a sandbox and offers only those that pass (at most %s s per action)"):format(
        tostring(verification.timeBudgetSeconds or "?")
      )
    )
    health.info("Neovim has no workspace trust: set `settings = { tests = { verify = \"off\" } }` for a project you do not trust")
  else
    health.info('tests are written unverified: `settings.tests.verify` is "off"')
  end
  if verification.isolation == false then
    health.info("sandbox without network isolation: unprivileged user namespaces are not available (docs/security.md)")
  end
  for _, tool in ipairs({
    { "python", "Python" },
    { "node", "Node.js" },
    { "typescript", "TypeScript compiler (the project's node_modules)" },
    { "go", "Go" },
    { "cargo", "Cargo" },
  }) do
    local found = verification[tool[1]]
    if type(found) == "table" then
      health.ok(("%s: %s (%s)"):format(tool[2], tostring(found.program), tostring(found.source)))
    elseif found ~= nil then
      health.info(("%s: not found; its tests are written unverified"):format(tool[2]))
    end
  end
end

local function strip_ansi(s)
  return (s:gsub("\27%[[%d;]*m", ""))
end

function M.check()
  health.start("nib: Neovim")
  local v = vim.version()
  local version = ("%d.%d.%d"):format(v.major, v.minor, v.patch)
  if vim.fn.has("nvim-0.10") == 1 then
    health.ok("Neovim " .. version)
  else
    health.error("Neovim " .. version .. ": nib.nvim needs 0.10 or newer")
  end
  if require("nib.inline").use_native() then
    health.ok("ghost text: Neovim's vim.lsp.inline_completion (highlight group ComplHint)")
  else
    health.ok("ghost text: nib.nvim extmarks (highlight group NibGhostText)")
  end
  if config.configured then
    health.ok("setup() called; filetypes: " .. table.concat(config.options.filetypes, ", "))
  else
    health.warn("require('nib').setup() has not been called: nib does not start", {
      "Call require('nib').setup({}) in your config (lazy.nvim: `opts = {}`).",
    })
  end

  health.start("nib: server")
  local cmd, how = lsp.resolve_cmd(config.options.cmd)
  if type(cmd) ~= "table" then
    health.info("cmd is a function; cannot check the binary")
    return
  end
  local exe = vim.fn.exepath(cmd[1])
  if exe == "" then
    health.error(("binary `%s` not found (%s)"):format(cmd[1], how), {
      "Build it with `make setup` in the nib checkout, put `nib` on $PATH, or set the `cmd` option.",
    })
    return
  end
  health.ok(("binary: %s (%s)"):format(exe, how))
  local ok, result = pcall(function()
    return vim.system({ exe, "--version" }, { text = true }):wait(10000)
  end)
  if ok and result and result.code == 0 then
    health.ok("`nib --version`: " .. vim.trim(result.stdout or ""))
  else
    health.error("`nib --version` failed: " .. vim.trim(ok and result and ((result.stderr or "") .. (result.stdout or "")) or tostring(result)))
    return
  end

  health.start("nib: model")
  local ready, verification = false, nil
  for _, client in ipairs(lsp.clients()) do
    local status = lsp.status[client.id]
    if status then
      report_status(status, (" (client %d)"):format(client.id))
      ready = ready or status.state == "ready"
      verification = verification or status.verification
    else
      health.info(("client %d: no nib/status received yet"):format(client.id))
    end
  end
  if ready then
    health.ok("ONNX Runtime: loaded (the model is running)")
    report_verification(verification)
    return
  end
  health.info("starting `" .. exe .. "` to check the model (nib/status)")
  local status, stderr = M.probe(cmd, lsp.settings(), 60000)
  stderr = strip_ansi(stderr or "")
  local ort = stderr:match("onnxruntime loaded from ([^\n]+)")
  if status then
    report_status(status, "")
  else
    health.error("nib sent no final nib/status (ready or error)", { "Server log:\n" .. stderr:sub(-2000) })
  end
  if ort then
    health.ok("ONNX Runtime: " .. vim.trim(ort))
  elseif status and status.state == "ready" then
    health.ok("ONNX Runtime: loaded")
  end
  report_verification(status and status.verification)
end

return M
