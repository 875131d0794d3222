--- Ghost text drawn with extmarks (Neovim 0.10 and 0.11, or 0.12+ with `native = false`).
---
--- While typing in Insert mode, a `textDocument/inlineCompletion` request is sent once the
--- buffer has been quiet for `debounce` ms; a newer request cancels the one before it and a
--- reply is dropped unless the buffer (changedtick) and the cursor are still where it was
--- asked. The suggestion is one extmark in the `nib` namespace: inline `virt_text` at the
--- cursor for its first line and `virt_lines` for the rest, in `NibGhostText`.
local config = require("nib.config")
local lsp = require("nib.lsp")

local api = vim.api
local uv = vim.uv or vim.loop

local M = {}

M.ns = api.nvim_create_namespace("nib")

local AUTOMATIC, INVOKED = 2, 1

---@class nib.Suggestion
---@field row integer        0-based row of the anchor
---@field col integer        byte column of the anchor (where the text starts)
---@field text string        text to insert at the anchor
---@field end_col integer    byte column the insertion replaces up to (>= col, same row)
---@field command? table     LSP command to run after accepting

---@class nib.BufState
---@field client_id integer
---@field timer uv.uv_timer_t?
---@field request_id integer?
---@field seq integer
---@field items nib.Suggestion[]
---@field index integer
---@field sugg nib.Suggestion?
---@field extmark integer?

---@type table<integer, nib.BufState>
local buffers = {}

local function in_insert_mode()
  return api.nvim_get_mode().mode:sub(1, 1) == "i"
end

--- Byte column of an LSP position's character on `line`.
local function byte_col(line, character, encoding)
  if encoding == "utf-8" then
    return math.min(character, #line)
  end
  local ok, col
  if vim.fn.has("nvim-0.11") == 1 then
    ok, col = pcall(vim.str_byteindex, line, encoding, character, false)
  else
    ok, col = pcall(vim.str_byteindex, line, character, encoding == "utf-16")
  end
  return ok and col or #line
end

--- The plain text of an `insertText` (a string, or a snippet `StringValue`).
local function plain_text(insert_text)
  if type(insert_text) == "string" then
    return insert_text
  end
  if type(insert_text) == "table" and type(insert_text.value) == "string" then
    local text = insert_text.value
    text = text:gsub("%${%d+:([^}]*)}", "%1"):gsub("%${%d+}", ""):gsub("%$%d+", ""):gsub("\\([%$}\\])", "%1")
    return text
  end
  return nil
end

--- Turns the reply's items into suggestions anchored at the cursor: the part of an item's
--- range before the cursor must already be typed (it is skipped), and the range must stay on
--- the cursor's line.
---@return nib.Suggestion[]
local function normalize(result, bufnr, encoding, row, col)
  local raw = type(result) == "table" and (result.items or result) or {}
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  local out = {}
  for _, item in ipairs(raw) do
    local text = type(item) == "table" and plain_text(item.insertText)
    local start_col, end_col = col, col
    local ok = text ~= nil
    if ok and item.range then
      local s, e = item.range.start, item.range["end"]
      if s.line ~= row or e.line ~= row then
        ok = false
      else
        start_col = byte_col(line, s.character, encoding)
        end_col = math.max(byte_col(line, e.character, encoding), col)
        ok = start_col <= col
      end
    end
    if ok then
      local typed = line:sub(start_col + 1, col)
      if text:sub(1, #typed) == typed then
        text = text:sub(#typed + 1)
        if text ~= "" then
          out[#out + 1] = { row = row, col = col, text = text, end_col = end_col, command = item.command }
        end
      end
    end
  end
  return out
end

local function expand_tabs(s, bufnr)
  if not s:find("\t", 1, true) then
    return s
  end
  return (s:gsub("\t", string.rep(" ", vim.bo[bufnr].tabstop)))
end

local function hide(bufnr)
  local s = buffers[bufnr]
  if s and s.extmark then
    pcall(api.nvim_buf_del_extmark, bufnr, M.ns, s.extmark)
    s.extmark = nil
  end
end

--- Draws `s.sugg`.
local function render(bufnr)
  local s = buffers[bufnr]
  hide(bufnr)
  if not (s and s.sugg) then
    return
  end
  local lines = vim.split(s.sugg.text, "\n", { plain = true })
  local opts = { hl_mode = "combine", priority = 65535 }
  if lines[1] ~= "" then
    opts.virt_text = { { expand_tabs(lines[1], bufnr), "NibGhostText" } }
    opts.virt_text_pos = "inline"
  end
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      opts.virt_lines[#opts.virt_lines + 1] = { { expand_tabs(lines[i], bufnr), "NibGhostText" } }
    end
  end
  local ok, id = pcall(api.nvim_buf_set_extmark, bufnr, M.ns, s.sugg.row, s.sugg.col, opts)
  if ok then
    s.extmark = id
  else
    s.sugg = nil
  end
end

--- Cancels the request in flight and the pending debounce.
local function cancel(bufnr)
  local s = buffers[bufnr]
  if not s then
    return
  end
  if s.timer then
    s.timer:stop()
  end
  s.seq = s.seq + 1
  if s.request_id then
    local client = vim.lsp.get_client_by_id(s.client_id)
    if client and not lsp.is_stopped(client) then
      pcall(lsp.cancel_request, client, s.request_id)
    end
    s.request_id = nil
  end
end

--- Hides the suggestion and forgets it.
function M.clear(bufnr)
  local s = buffers[bufnr]
  if not s then
    return
  end
  s.sugg, s.items, s.index = nil, {}, 1
  hide(bufnr)
end

--- Keeps the suggestion while what was typed since it was shown is a prefix of it (the rest
--- is shown at the cursor), else clears it.
local function reconcile(bufnr)
  local s = buffers[bufnr]
  if not (s and s.sugg) then
    return
  end
  local sugg = s.sugg
  local cursor = api.nvim_win_get_cursor(0)
  local row, col = cursor[1] - 1, cursor[2]
  if api.nvim_get_current_buf() ~= bufnr or not in_insert_mode() or row ~= sugg.row or col < sugg.col then
    return M.clear(bufnr)
  end
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  local typed = line:sub(sugg.col + 1, col)
  if typed == "" then
    -- Same place; redraw in case the line changed after the cursor.
    if sugg.end_col > #line then
      sugg.end_col = col
    end
    return render(bufnr)
  end
  if #typed < #sugg.text and sugg.text:sub(1, #typed) == typed and not typed:find("\n", 1, true) then
    s.sugg = { row = row, col = col, text = sugg.text:sub(#typed + 1), end_col = col, command = sugg.command }
    s.items, s.index = { s.sugg }, 1
    return render(bufnr)
  end
  M.clear(bufnr)
end

--- Sends an inline completion request for the cursor of the current window.
---@param bufnr integer
---@param trigger_kind integer 1 invoked, 2 automatic
function M.request(bufnr, trigger_kind)
  local s = buffers[bufnr]
  if not s or api.nvim_get_current_buf() ~= bufnr or not in_insert_mode() then
    return
  end
  local client = vim.lsp.get_client_by_id(s.client_id)
  if not client or lsp.is_stopped(client) then
    return
  end
  cancel(bufnr)
  local seq = s.seq
  local win = api.nvim_get_current_win()
  local cursor = api.nvim_win_get_cursor(win)
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local encoding = client.offset_encoding or "utf-16"
  local params = vim.lsp.util.make_position_params(win, encoding)
  params.context = { triggerKind = trigger_kind }
  local ok, id = lsp.request(client, "textDocument/inlineCompletion", params, function(err, result)
    if s.seq ~= seq then
      return -- superseded or cancelled
    end
    s.request_id = nil
    if err then
      if trigger_kind == INVOKED and err.code ~= -32800 and err.code ~= -32801 then
        vim.notify("nib: " .. tostring(err.message), vim.log.levels.WARN)
      end
      return
    end
    -- Stale unless the buffer and the cursor are where the request was made.
    if
      buffers[bufnr] ~= s
      or api.nvim_get_current_buf() ~= bufnr
      or api.nvim_buf_get_changedtick(bufnr) ~= tick
      or not in_insert_mode()
      or not vim.deep_equal(api.nvim_win_get_cursor(0), cursor)
    then
      return
    end
    local items = normalize(result, bufnr, encoding, cursor[1] - 1, cursor[2])
    if #items == 0 then
      -- Nothing new: keep what is still shown from typing along a suggestion.
      if trigger_kind == INVOKED then
        vim.api.nvim_echo({ { "nib: no suggestion here", "None" } }, false, {})
      end
      return
    end
    s.items, s.index, s.sugg = items, 1, items[1]
    render(bufnr)
  end, bufnr)
  if ok then
    s.request_id = id
  end
end

--- Requests a suggestion after `debounce` ms of quiet.
local function schedule(bufnr)
  local s = buffers[bufnr]
  if not s then
    return
  end
  cancel(bufnr)
  if not config.options.auto_trigger then
    return
  end
  if not s.timer then
    s.timer = uv.new_timer()
  end
  local seq = s.seq
  s.timer:start(
    math.max(0, config.options.debounce or 150),
    0,
    vim.schedule_wrap(function()
      if buffers[bufnr] == s and s.seq == seq then
        M.request(bufnr, AUTOMATIC)
      end
    end)
  )
end

local function on_edit(bufnr)
  if api.nvim_get_current_buf() ~= bufnr then
    return
  end
  reconcile(bufnr)
  if vim.fn.pumvisible() == 1 then
    cancel(bufnr)
    return M.clear(bufnr)
  end
  schedule(bufnr)
end

---@param client vim.lsp.Client
---@param bufnr integer
function M.attach(client, bufnr)
  if buffers[bufnr] then
    buffers[bufnr].client_id = client.id
    return
  end
  buffers[bufnr] = { client_id = client.id, seq = 0, items = {}, index = 1 }
  local group = api.nvim_create_augroup("nib.ghost." .. bufnr, { clear = true })
  api.nvim_create_autocmd({ "TextChangedI", "CursorMovedI" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      on_edit(bufnr)
    end,
  })
  api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      cancel(bufnr)
      M.clear(bufnr)
    end,
  })
  -- Leaving Insert mode for anything else (Ctrl-O, the completion menu's submodes).
  api.nvim_create_autocmd("ModeChanged", {
    group = group,
    buffer = bufnr,
    callback = function()
      if not in_insert_mode() or vim.v.event.new_mode ~= "i" then
        cancel(bufnr)
        M.clear(bufnr)
      end
    end,
  })
  api.nvim_create_autocmd({ "BufUnload", "BufWipeout" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.detach(bufnr)
    end,
  })
  api.nvim_create_autocmd("LspDetach", {
    group = group,
    buffer = bufnr,
    callback = function(args)
      local s = buffers[bufnr]
      if s and args.data and args.data.client_id == s.client_id then
        M.detach(bufnr)
      end
    end,
  })
end

function M.detach(bufnr)
  local s = buffers[bufnr]
  if not s then
    return
  end
  cancel(bufnr)
  M.clear(bufnr)
  if s.timer then
    s.timer:close()
    s.timer = nil
  end
  buffers[bufnr] = nil
  pcall(api.nvim_del_augroup_by_name, "nib.ghost." .. bufnr)
end

function M.is_attached(bufnr)
  return buffers[bufnr] ~= nil
end

---@return nib.Suggestion?
function M.current(bufnr)
  local s = buffers[bufnr]
  if s and s.sugg and s.extmark and in_insert_mode() then
    return s.sugg
  end
  return nil
end

function M.is_visible(bufnr)
  return M.current(bufnr) ~= nil
end

--- Whether a request is pending (debouncing or in flight).
function M.is_busy(bufnr)
  local s = buffers[bufnr]
  return s ~= nil and (s.request_id ~= nil or (s.timer ~= nil and s.timer:get_due_in() > 0))
end

--- The next word of `text`: a line break with the next line's indentation, or leading blanks
--- with a run of word characters or of punctuation, with the blanks after it.
function M.next_word(text)
  local newline = text:match("^\n[ \t]*")
  if newline then
    return newline
  end
  local word = text:match("^[ \t]*[%w_]+[ \t]*") or text:match("^[ \t]*[^%w_%s]+[ \t]*") or text:match("^[ \t]+")
  return word or text:sub(1, 1)
end

--- The rest of the current line of `text`, or, when `text` starts with a line break, that
--- break and the next line.
function M.next_line(text)
  local first = text:match("^[^\n]*")
  if first ~= "" then
    return first
  end
  return text:match("^\n[^\n]*")
end

--- Inserts all or part of the suggestion at the cursor.
---@param part? "all"|"word"|"line"
---@return boolean accepted
function M.accept(bufnr, part)
  local s = buffers[bufnr]
  local sugg = M.current(bufnr)
  if not (s and sugg) then
    return false
  end
  local text = sugg.text
  local chunk = part == "word" and M.next_word(text) or part == "line" and M.next_line(text) or text
  local rest = text:sub(#chunk + 1)
  cancel(bufnr)
  hide(bufnr)
  s.sugg = nil
  local lines = vim.split(chunk, "\n", { plain = true })
  local end_col = rest == "" and sugg.end_col or sugg.col
  api.nvim_buf_set_text(bufnr, sugg.row, sugg.col, sugg.row, end_col, lines)
  local row = sugg.row + #lines - 1
  local col = #lines == 1 and sugg.col + #lines[1] or #lines[#lines]
  api.nvim_win_set_cursor(0, { row + 1, col })
  if rest ~= "" then
    -- Keep showing the rest; the request after this edit is answered from nib's cache.
    s.sugg = { row = row, col = col, text = rest, end_col = col, command = sugg.command }
    s.items, s.index = { s.sugg }, 1
    render(bufnr)
  else
    s.items, s.index = {}, 1
    if sugg.command then
      local client = vim.lsp.get_client_by_id(s.client_id)
      if client then
        lsp.request(client, "workspace/executeCommand", sugg.command, function() end, bufnr)
      end
    end
  end
  return true
end

--- Shows the next (`delta` 1) or previous (-1) suggestion when the server gave several;
--- otherwise asks for a suggestion now (invoked).
function M.cycle(bufnr, delta)
  local s = buffers[bufnr]
  if not s then
    return
  end
  if M.is_visible(bufnr) and #s.items > 1 then
    s.index = (s.index - 1 + delta) % #s.items + 1
    s.sugg = s.items[s.index]
    return render(bufnr)
  end
  M.request(bufnr, INVOKED)
end

function M.dismiss(bufnr)
  cancel(bufnr)
  M.clear(bufnr)
end

return M
