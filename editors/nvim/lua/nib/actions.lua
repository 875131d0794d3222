--- nib's code actions at the cursor, applied directly (`:NibDocstring`, `:NibTests`). They go
--- through `vim.lsp.buf.code_action()`, so resolving, progress and applying the edit are
--- Neovim's own.
local lsp = require("nib.lsp")

local M = {}

M.DOCSTRING = "refactor.rewrite.nib.docstring"
M.TESTS = "refactor.nib.tests"

--- Runs the nib code action of `kind` at the cursor and applies its edit.
---@param kind string
---@param opts? { range?: table }
function M.run(kind, opts)
  opts = opts or {}
  local bufnr = vim.api.nvim_get_current_buf()
  if #lsp.clients(bufnr) == 0 then
    vim.notify("nib: no nib server is attached to this buffer", vim.log.levels.WARN)
    return
  end
  vim.lsp.buf.code_action({
    context = { only = { kind }, diagnostics = {} },
    filter = function(action)
      return action.kind == kind
    end,
    apply = true,
    range = opts.range,
  })
end

function M.docstring(opts)
  M.run(M.DOCSTRING, opts)
end

--- Opens the test file once nib's edit has been applied to it: watches for a buffer other
--- than `source` whose name mentions "test" to be created or changed (nib writes Python,
--- JavaScript and Go tests to a separate file, Rust tests into the source file itself).
local function show_tests_when_written(source, timeout_ms)
  local api = vim.api
  local ticks = {}
  for _, b in ipairs(api.nvim_list_bufs()) do
    ticks[b] = api.nvim_buf_get_changedtick(b)
  end
  local timer = assert((vim.uv or vim.loop).new_timer())
  local waited = 0
  local function stop()
    if not timer:is_closing() then
      timer:stop()
      timer:close()
    end
  end
  timer:start(100, 100, vim.schedule_wrap(function()
    waited = waited + 100
    if timer:is_closing() then
      return
    end
    if waited > timeout_ms or not api.nvim_buf_is_valid(source) or api.nvim_buf_get_changedtick(source) ~= ticks[source] then
      return stop()
    end
    for _, b in ipairs(api.nvim_list_bufs()) do
      local name = api.nvim_buf_get_name(b)
      if
        b ~= source
        and api.nvim_buf_is_loaded(b)
        and api.nvim_buf_get_changedtick(b) ~= ticks[b]
        and vim.fs.basename(name):lower():find("test", 1, true)
      then
        stop()
        if vim.fn.bufwinid(b) == -1 then
          local win = api.nvim_get_current_win()
          vim.cmd("belowright sbuffer " .. b)
          api.nvim_set_current_win(win)
        end
        local saved = vim.bo[b].modified and " (not saved yet: :wall)" or ""
        vim.notify("nib: tests written to " .. vim.fn.fnamemodify(name, ":~:.") .. saved, vim.log.levels.INFO)
        return
      end
    end
  end))
end

function M.tests(opts)
  local source = vim.api.nvim_get_current_buf()
  M.run(M.TESTS, opts)
  if #lsp.clients(source) > 0 then
    local settings = require("nib.config").options.settings or {}
    show_tests_when_written(source, (tonumber(settings.requestTimeoutMs) or 30000) + 10000)
  end
end

return M
