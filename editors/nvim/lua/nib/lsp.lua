--- Starting the nib language server and talking to it: the client configuration, the
--- `nib/status` handler, progress messages, and small wrappers over the client API that
--- changed between Neovim 0.10 and 0.11.
local config = require("nib.config")

local M = {}

local has_011 = vim.fn.has("nvim-0.11") == 1

--- The directory of this plugin (`editors/nvim` in the nib checkout), symlinks resolved (a
--- package directory may link to it).
M.plugin_root = (function()
  local dir = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h:h:h")
  return (vim.uv or vim.loop).fs_realpath(dir) or dir
end)()

--- Last `nib/status` params per client id.
---@type table<integer, table>
M.status = {}

-- Client API wrappers (methods with `:` from 0.11, fields with `.` before).

---@param client vim.lsp.Client
---@return boolean, integer?
function M.request(client, method, params, handler, bufnr)
  if has_011 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

---@param client vim.lsp.Client
function M.request_sync(client, method, params, timeout_ms, bufnr)
  if has_011 then
    return client:request_sync(method, params, timeout_ms, bufnr)
  end
  return client.request_sync(method, params, timeout_ms, bufnr)
end

---@param client vim.lsp.Client
function M.notify(client, method, params)
  if has_011 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

---@param client vim.lsp.Client
function M.cancel_request(client, id)
  if has_011 then
    return client:cancel_request(id)
  end
  return client.cancel_request(id)
end

---@param client vim.lsp.Client
function M.is_stopped(client)
  if has_011 then
    return client:is_stopped()
  end
  return client.is_stopped()
end

--- The nib clients, optionally only those attached to `bufnr`.
---@param bufnr? integer
---@return vim.lsp.Client[]
function M.clients(bufnr)
  return vim.lsp.get_clients({ name = "nib", bufnr = bufnr })
end

--- The server command: the `cmd` option, else `nib` on $PATH, else this checkout's
--- `target/release/nib` (found from the plugin's own path).
---@param cmd? string|string[]|function
---@return string[]|function cmd, string how
function M.resolve_cmd(cmd)
  if type(cmd) == "function" then
    return cmd, "the cmd option (a function)"
  end
  if type(cmd) == "string" then
    return { vim.fn.expand(cmd) }, "the cmd option"
  end
  if type(cmd) == "table" and #cmd > 0 then
    local copy = vim.deepcopy(cmd)
    copy[1] = vim.fn.expand(copy[1])
    return copy, "the cmd option"
  end
  if vim.fn.executable("nib") == 1 then
    return { vim.fn.exepath("nib") }, "nib on $PATH"
  end
  local built = vim.fs.dirname(vim.fs.dirname(M.plugin_root)) .. "/target/release/nib"
  if vim.fn.executable(built) == 1 then
    return { built }, "the nib checkout this plugin lives in"
  end
  return { "nib" }, "not found (neither on $PATH nor at " .. built .. ")"
end

--- The project root of `bufnr`: the nearest directory with a root marker, else the current
--- directory when the file is below it, else the file's directory.
---@param bufnr integer
---@return string?
function M.root_dir(bufnr)
  local name = vim.api.nvim_buf_get_name(bufnr)
  if name == "" then
    return vim.fn.getcwd()
  end
  local root = vim.fs.root(bufnr, config.options.root_markers)
  if root then
    return root
  end
  local cwd = vim.fn.getcwd()
  local path = vim.fs.normalize(vim.fn.fnamemodify(name, ":p"))
  if vim.startswith(path, vim.fs.normalize(cwd) .. "/") then
    return cwd
  end
  return vim.fs.dirname(path)
end

--- nib's settings as sent to the server (`initializationOptions`).
---@param overrides? table
---@return table
function M.settings(overrides)
  local settings = vim.tbl_deep_extend("force", vim.deepcopy(config.options.settings or {}), overrides or {})
  if next(settings) == nil then
    return vim.empty_dict()
  end
  return settings
end

--- Echoes a one-line message, cut to the space left in the command line so that it never
--- causes a hit-enter prompt.
local function echo(msg, hl, history)
  msg = msg:gsub("\n", " ")
  local room = math.max(vim.v.echospace, 1)
  if vim.fn.strdisplaywidth(msg) > room then
    local cut = msg
    while #cut > 0 and vim.fn.strdisplaywidth(cut) > room - 1 do
      cut = vim.fn.strcharpart(cut, 0, vim.fn.strchars(cut) - math.max(1, vim.fn.strdisplaywidth(cut) - room + 1))
    end
    msg = cut .. "…"
  end
  vim.api.nvim_echo({ { msg, hl } }, history, {})
end
M.echo = echo

--- `nib/status`: remember it, echo changes, and fire `User NibStatus` for statuslines.
local function on_status(_, params, ctx)
  if type(params) ~= "table" then
    return
  end
  local previous = M.status[ctx.client_id]
  M.status[ctx.client_id] = params
  if config.options.status_messages and not (previous and previous.state == params.state) then
    vim.schedule(function()
      if params.state == "loading" then
        echo("nib: loading model " .. tostring(params.model or ""), "None", false)
      elseif params.state == "ready" then
        echo(
          ("nib: model ready (%s, loaded in %s ms)"):format(tostring(params.name or params.model), tostring(params.loadMs or "?")),
          "None",
          false
        )
      end
      -- "error" is also sent as window/showMessage by nib, which Neovim shows.
    end)
  end
  vim.schedule(function()
    vim.api.nvim_exec_autocmds("User", { pattern = "NibStatus", modeline = false, data = { client_id = ctx.client_id, status = params } })
  end)
end

--- Client capabilities: Neovim's, plus inline completion (which nib.nvim renders itself
--- before Neovim 0.12), so nib gives ghost text instead of completion-menu items.
local function capabilities()
  local caps = vim.lsp.protocol.make_client_capabilities()
  caps.textDocument = caps.textDocument or {}
  caps.textDocument.inlineCompletion = caps.textDocument.inlineCompletion or { dynamicRegistration = false }
  return caps
end

--- The client configuration for `vim.lsp.start` / `vim.lsp.config`.
---@return table
function M.client_config()
  local opts = config.options
  local cmd = M.resolve_cmd(opts.cmd)
  local settings = M.settings()
  return {
    name = "nib",
    cmd = cmd,
    filetypes = opts.filetypes,
    init_options = settings,
    capabilities = capabilities(),
    handlers = { ["nib/status"] = on_status },
    on_init = function(client)
      -- Answer `workspace/configuration` with the same settings (nothing is pushed twice),
      -- and tell a server started while suggestions are toggled off.
      if config.options.auto_trigger == false then
        local off = M.settings({ completion = { enabled = false } })
        client.settings = { nib = off }
        M.notify(client, "workspace/didChangeConfiguration", { settings = { nib = off } })
      else
        client.settings = { nib = settings }
      end
    end,
    on_attach = function(client, bufnr)
      require("nib.inline").attach(client, bufnr)
      -- Entering the buffer again: nib warms its model cache for it at the cursor
      -- (docs/lsp-extensions.md).
      vim.api.nvim_create_autocmd("BufEnter", {
        group = vim.api.nvim_create_augroup("nib.focus." .. bufnr, { clear = true }),
        buffer = bufnr,
        callback = function()
          if not M.is_stopped(client) then
            local at = vim.lsp.util.make_position_params(0, client.offset_encoding or "utf-16")
            M.notify(client, "nib/didFocus", {
              textDocument = { uri = vim.uri_from_bufnr(bufnr) },
              position = at.position,
            })
          end
        end,
      })
    end,
    on_exit = function(_, _, client_id)
      M.status[client_id] = nil
    end,
  }
end

local augroup = vim.api.nvim_create_augroup("nib.lsp", { clear = true })

--- Starts (or reuses) the client for `bufnr` (Neovim 0.10 path).
---@param bufnr integer
function M.start(bufnr)
  if not vim.api.nvim_buf_is_valid(bufnr) or vim.bo[bufnr].buftype ~= "" then
    return
  end
  if not vim.tbl_contains(config.options.filetypes, vim.bo[bufnr].filetype) then
    return
  end
  local client_config = M.client_config()
  client_config.root_dir = M.root_dir(bufnr)
  vim.lsp.start(client_config, { bufnr = bufnr })
end

--- Registers nib for its filetypes: `vim.lsp.config` + `vim.lsp.enable` where they exist,
--- a FileType autocommand with `vim.lsp.start` before.
function M.enable()
  vim.api.nvim_clear_autocmds({ group = augroup })
  if vim.lsp.config and vim.lsp.enable then
    local client_config = M.client_config()
    client_config.root_dir = function(bufnr, on_dir)
      on_dir(M.root_dir(bufnr))
    end
    -- Assigned, not merged with `vim.lsp.config("nib", ...)`, so that calling setup() again
    -- replaces lists such as `filetypes` instead of merging them index by index.
    vim.lsp.config["nib"] = client_config
    vim.lsp.enable("nib")
  else
    vim.api.nvim_create_autocmd("FileType", {
      group = augroup,
      pattern = config.options.filetypes,
      callback = function(args)
        M.start(args.buf)
      end,
    })
    for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
      if vim.api.nvim_buf_is_loaded(bufnr) then
        M.start(bufnr)
      end
    end
  end

  vim.api.nvim_create_autocmd("LspProgress", {
    group = augroup,
    callback = function(args)
      local data = args.data or {}
      local client = data.client_id and vim.lsp.get_client_by_id(data.client_id)
      if not (client and client.name == "nib" and data.params) then
        return
      end
      local token, value = data.params.token, data.params.value or {}
      if token == "nib/model-load" and config.options.status_messages then
        return -- the nib/status messages say the same
      end
      local key = data.client_id .. ":" .. tostring(token)
      if value.kind == "end" then
        M.progress[key] = nil
        if config.options.progress_messages then
          echo("", "None", false)
        end
        return
      end
      local entry = M.progress[key] or {}
      entry.title = value.title or entry.title or "nib"
      entry.message = value.message or entry.message
      entry.percentage = value.percentage or entry.percentage
      M.progress[key] = entry
      if config.options.progress_messages then
        echo(M.format_progress(entry), "None", false)
      end
    end,
  })
end

--- Work-done progress of nib clients in flight, by "client_id:token".
---@type table<string, { title: string, message?: string, percentage?: integer }>
M.progress = {}

---@param entry { title: string, message?: string, percentage?: integer }
function M.format_progress(entry)
  local text = vim.startswith(entry.title, "nib") and entry.title or ("nib: " .. entry.title)
  if entry.message and entry.message ~= "" then
    text = text .. ": " .. entry.message
  end
  if entry.percentage then
    text = text .. (" (%d%%)"):format(entry.percentage)
  end
  return text
end

--- Pushes the settings to every running client, with `completion.enabled` set to `enabled`
--- (automatic completions on or off; invoked ones keep working).
---@param enabled boolean
function M.push_completion_enabled(enabled)
  local settings = M.settings({ completion = { enabled = enabled } })
  for _, client in ipairs(M.clients()) do
    client.settings = { nib = settings }
    M.notify(client, "workspace/didChangeConfiguration", { settings = { nib = settings } })
  end
end

return M
