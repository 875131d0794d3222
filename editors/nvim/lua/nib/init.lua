--- nib.nvim: ghost text, docstrings and unit tests from nib, a local code model served
--- over LSP. See `:help nib`.
local config = require("nib.config")

local M = {}

--- Configures nib.nvim and starts nib for the configured filetypes.
---@param opts? nib.Options
function M.setup(opts)
  config.set(opts)
  config.highlights()
  require("nib.lsp").enable()
end

local function buf()
  return vim.api.nvim_get_current_buf()
end

local function backend()
  return require("nib.inline").backend(buf())
end

--- Whether a suggestion is shown at the cursor.
---@return boolean
function M.is_visible()
  local b = backend()
  return b ~= nil and b.is_visible(buf()) or false
end

--- The suggestion shown at the cursor with the extmark renderer: `{ row, col, text }`
--- (0-based row, byte column, the text that accepting inserts); nil otherwise.
---@return { row: integer, col: integer, text: string }?
function M.get_suggestion()
  local b = backend()
  local s = b and b.current(buf())
  return s and { row = s.row, col = s.col, text = s.text } or nil
end

--- Accepts the whole suggestion. Returns false when none is shown.
---@return boolean
function M.accept()
  local b = backend()
  return b ~= nil and b.accept(buf(), "all") or false
end

--- Accepts the next word of the suggestion.
---@return boolean
function M.accept_word()
  local b = backend()
  return b ~= nil and b.accept(buf(), "word") or false
end

--- Accepts the rest of the suggestion's current line (or its next line).
---@return boolean
function M.accept_line()
  local b = backend()
  return b ~= nil and b.accept(buf(), "line") or false
end

--- Next suggestion; asks for one now when there is nothing else to show.
function M.next()
  local b = backend()
  if b then
    b.cycle(buf(), 1)
  end
end

--- Previous suggestion; asks for one now when there is nothing else to show.
function M.prev()
  local b = backend()
  if b then
    b.cycle(buf(), -1)
  end
end

--- Asks for a suggestion at the cursor now (also when automatic suggestions are off).
M.suggest = M.next

--- Hides the suggestion.
function M.dismiss()
  local b = backend()
  if b then
    b.dismiss(buf())
  end
end

--- Whether suggestions appear while typing.
---@return boolean
function M.is_enabled()
  return config.options.auto_trigger ~= false
end

--- Turns suggestions while typing on or off (`nil` toggles). Invoked suggestions
--- (`next()`/`prev()`) keep working.
---@param enabled? boolean
function M.toggle(enabled)
  if enabled == nil then
    enabled = not M.is_enabled()
  end
  config.options.auto_trigger = enabled
  require("nib.lsp").push_completion_enabled(enabled)
  if not enabled then
    M.dismiss()
  end
  vim.api.nvim_echo({ { "nib: automatic suggestions " .. (enabled and "on" or "off"), "None" } }, false, {})
end

--- Code action "Add docstring" at the cursor, applied directly.
function M.docstring()
  require("nib.actions").docstring()
end

--- Code action "Generate unit tests" at the cursor, applied directly.
function M.tests()
  require("nib.actions").tests()
end

--- The model state reported by the first nib client (`nib/status` params), if any.
---@param bufnr? integer
---@return table?
function M.model_status(bufnr)
  local lsp = require("nib.lsp")
  for _, client in ipairs(lsp.clients(bufnr)) do
    if lsp.status[client.id] then
      return lsp.status[client.id]
    end
  end
  return nil
end

--- A short string for statuslines: the model state, or the progress of a code action.
---@return string
function M.statusline()
  local lsp = require("nib.lsp")
  local clients = lsp.clients(buf())
  if #clients == 0 then
    return ""
  end
  local _, entry = next(lsp.progress)
  if entry then
    return lsp.format_progress(entry)
  end
  local status = M.model_status(buf())
  if not status then
    return "nib"
  end
  if status.state == "ready" then
    return "nib" .. (M.is_enabled() and "" or " (off)")
  end
  return "nib: " .. tostring(status.state)
end

--- Prints the state of nib: clients, model, ghost text mode, engine counters.
function M.status()
  local lsp = require("nib.lsp")
  local lines = {}
  local function add(text)
    lines[#lines + 1] = text
  end
  local clients = lsp.clients()
  if #clients == 0 then
    local cmd, how = lsp.resolve_cmd(config.options.cmd)
    add("nib: no server running (setup() " .. (config.configured and "called" or "not called") .. ")")
    add("  server: " .. (type(cmd) == "table" and table.concat(cmd, " ") or "<function>") .. " (" .. how .. ")")
  end
  for _, client in ipairs(clients) do
    local status = lsp.status[client.id] or { state = "unknown" }
    local version = client.server_info and client.server_info.version or "?"
    add(("nib %s: client %d, root %s"):format(version, client.id, tostring(client.root_dir or client.config.root_dir)))
    if status.state == "ready" then
      add(
        ("  model: ready, %s (%s), loaded in %s ms, context %s tokens"):format(
          tostring(status.name),
          tostring(status.model),
          tostring(status.loadMs),
          tostring(status.contextLength)
        )
      )
    elseif status.state == "error" then
      add("  model: error: " .. tostring(status.message))
    else
      add("  model: " .. tostring(status.state) .. (status.model and (" " .. status.model) or ""))
    end
    local attached = vim.lsp.buf_is_attached(buf(), client.id)
    if attached then
      local reply = lsp.request_sync(client, "nib/inspect", { textDocument = { uri = vim.uri_from_bufnr(buf()) } }, 2000, buf())
      local engine = reply and reply.result and reply.result.engine
      if engine and engine.stats then
        local st = engine.stats
        add(
          ("  engine: %s generations, %s cache hits, %s reused / %s prefilled tokens, %s cached tokens"):format(
            tostring(st.generations),
            tostring(st.cacheHits),
            tostring(st.reusedTokens),
            tostring(st.prefilledTokens),
            tostring(engine.cachedTokens)
          )
        )
      end
    end
  end
  local native = require("nib.inline").use_native()
  add(
    ("  ghost text: %s, automatic suggestions %s"):format(
      native and "vim.lsp.inline_completion (native)" or "extmarks (nib.nvim)",
      M.is_enabled() and "on" or "off"
    )
  )
  vim.api.nvim_echo({ { table.concat(lines, "\n"), "None" } }, true, {})
  return lines
end

return M
