--- Ghost text through Neovim's own `vim.lsp.inline_completion` (Neovim 0.12+). Neovim draws
--- the suggestion (highlight group `ComplHint`) and requests it while typing; this module maps
--- nib.nvim's actions onto that API.
local api = vim.api

local M = {}

local function ic()
  return vim.lsp.inline_completion
end

function M.available()
  local mod = vim.lsp.inline_completion
  return mod ~= nil and type(mod.enable) == "function" and type(mod.get) == "function"
end

local function namespace()
  return api.nvim_create_namespace("nvim.lsp.inline_completion")
end

---@type table<integer, boolean>
local attached = {}

function M.attach(_, bufnr)
  attached[bufnr] = true
  ic().enable(true, { bufnr = bufnr })
end

function M.detach(bufnr)
  attached[bufnr] = nil
end

function M.is_attached(bufnr)
  return attached[bufnr] == true
end

function M.is_visible(bufnr)
  if not attached[bufnr] or api.nvim_get_mode().mode:sub(1, 1) ~= "i" then
    return false
  end
  return #api.nvim_buf_get_extmarks(bufnr, namespace(), 0, -1, { limit = 1 }) > 0
end

function M.is_busy(_)
  return false
end

--- The text of a native item, as a string.
local function item_text(item)
  local text = item.insert_text
  if type(text) == "table" then
    return text.value, true
  end
  return text, false
end

--- Characters of the item already typed (between its range start and the cursor).
local function typed_prefix(item)
  local range = item.range
  if type(range) ~= "table" then
    return ""
  end
  local start_row = range.start_row or range[1]
  local start_col = range.start_col or range[2]
  local cursor = api.nvim_win_get_cursor(0)
  if start_row ~= cursor[1] - 1 or type(start_col) ~= "number" or start_col > cursor[2] then
    return ""
  end
  local line = api.nvim_get_current_line()
  return line:sub(start_col + 1, cursor[2])
end

---@param part? "all"|"word"|"line"
function M.accept(bufnr, part)
  if not M.is_visible(bufnr) then
    return false
  end
  if part == nil or part == "all" then
    return ic().get({ bufnr = bufnr }) ~= false
  end
  local ghost = require("nib.ghost")
  return ic().get({
    bufnr = bufnr,
    on_accept = function(item)
      local text, is_snippet = item_text(item)
      if type(text) ~= "string" or is_snippet then
        return item
      end
      local typed = typed_prefix(item)
      if text:sub(1, #typed) ~= typed then
        return item
      end
      local rest = text:sub(#typed + 1)
      local chunk = part == "word" and ghost.next_word(rest) or ghost.next_line(rest)
      item.insert_text = typed .. chunk
      if chunk ~= rest then
        item.command = nil
      end
      return item
    end,
  }) ~= false
end

function M.cycle(bufnr, delta)
  if M.is_visible(bufnr) and type(ic().select) == "function" then
    return ic().select({ bufnr = bufnr, count = delta })
  end
  if not M.is_visible(bufnr) then
    ic().get({ bufnr = bufnr }) -- nothing shown: request one now
  end
end

function M.dismiss(bufnr)
  if M.is_visible(bufnr) then
    ic().get({
      bufnr = bufnr,
      on_accept = function()
        return nil
      end,
    })
  end
end

function M.current(_)
  return nil
end

return M
