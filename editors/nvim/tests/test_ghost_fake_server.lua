-- Ghost text rendering and accepting against a scripted in-process LSP server (no model):
-- multi-line suggestions (virt_text + virt_lines), ranges that start before the cursor,
-- accept line / word, typing along a suggestion, stale replies, the completion menu.
local H = dofile(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h") .. "/helpers.lua")

--- What the fake server answers, and the requests it got.
local reply = { items = {} }
local delay = 0
local requests = {}

local function fake_server(dispatchers)
  local closing = false
  local next_id = 0
  return {
    request = function(method, params, callback)
      next_id = next_id + 1
      local result
      if method == "initialize" then
        result = { capabilities = { inlineCompletionProvider = true, textDocumentSync = 2, positionEncoding = "utf-16" } }
      elseif method == "textDocument/inlineCompletion" then
        requests[#requests + 1] = params
        result = vim.deepcopy(reply)
      elseif method == "shutdown" then
        result = vim.NIL
      end
      vim.defer_fn(function()
        callback(nil, result)
      end, method == "textDocument/inlineCompletion" and delay or 0)
      return true, next_id
    end,
    notify = function(method)
      if method == "exit" then
        dispatchers.on_exit(0, 15)
      end
      return true
    end,
    is_closing = function()
      return closing
    end,
    terminate = function()
      closing = true
    end,
  }
end

local function pos(line, character)
  return { line = line, character = character }
end

H.run("ghost_fake_server", function()
  vim.o.showmode = false
  -- Start the server the Neovim 0.10 way (a FileType autocommand and vim.lsp.start), which
  -- setup() uses where vim.lsp.config/enable do not exist; the real-model tests cover those.
  local enable = vim.lsp.enable
  vim.lsp.enable = nil
  require("nib").setup({ cmd = fake_server, status_messages = false, debounce = 20 })
  vim.lsp.enable = enable
  H.truthy(#vim.api.nvim_get_autocmds({ group = "nib.lsp", event = "FileType" }) > 0, "FileType autocommand")
  local dir = vim.fn.tempname()
  vim.fn.mkdir(dir, "p")
  vim.fn.writefile({ "def f(items):", "    for i, item in enumerate(items):", "        ", "" }, dir .. "/f.py")
  vim.cmd.cd(dir)
  vim.cmd.edit(dir .. "/f.py")
  local buf = vim.api.nvim_get_current_buf()
  H.wait_for("the fake client attached", function()
    local c = require("nib.lsp").clients(buf)[1]
    return c and c.initialized and require("nib.ghost").is_attached(buf)
  end, 10000)

  -- A multi-line suggestion whose range starts at the line start (the indentation is typed).
  reply = {
    items = {
      {
        insertText = "        if item:\n            print(i)\n        else:\n            break",
        range = { start = pos(2, 0), ["end"] = pos(2, 8) },
      },
    },
  }
  vim.api.nvim_win_set_cursor(0, { 3, 0 })
  H.feed("A")
  local g = H.wait_ghost(buf, "a multi-line ghost text", 5000)
  H.eq("if item:\n            print(i)\n        else:\n            break", g.text, "ghost text without the typed indentation")
  H.eq({ 2, 8 }, { g.row, g.col }, "extmark position")
  H.eq(3, #g.details.virt_lines, "virt_lines for lines 2..4")
  H.eq("NibGhostText", g.details.virt_lines[1][1][2], "virt_lines highlight")
  H.eq(2, requests[#requests].context.triggerKind, "automatic trigger kind")

  -- From here the server has nothing new to say: what is shown comes from typing along.
  reply = { items = {} }
  H.feed("if ")
  H.wait_for("the rest after typing `if `", function()
    local now = H.ghost(buf)
    return now and now.text == "item:\n            print(i)\n        else:\n            break" and now.col == 11
  end, 2000)

  -- Accept line: the rest of the first line; then word; then all.
  H.wait_for("settled", function()
    return not require("nib.ghost").is_busy(buf) and require("nib").is_visible()
  end, 3000)
  vim.cmd("lua require('nib').accept_line()") -- outside a mapping too
  H.eq("        if item:", vim.api.nvim_get_current_line(), "accept_line")
  H.eq({ 3, 16 }, vim.api.nvim_win_get_cursor(0), "cursor after accept_line")
  H.feed("<M-j>")
  H.wait_for("the next line accepted", function()
    return H.lines(buf)[4] == "            print(i)"
  end, 2000)
  H.eq({ 4, 20 }, vim.api.nvim_win_get_cursor(0), "cursor after <M-j>")
  H.feed("<M-l>")
  H.wait_for("everything accepted", function()
    return vim.deep_equal(vim.list_slice(H.lines(buf), 3, 6), {
      "        if item:",
      "            print(i)",
      "        else:",
      "            break",
    })
  end, 2000)
  H.eq({ 6, 17 }, vim.api.nvim_win_get_cursor(0), "cursor after <M-l>")

  -- A reply for text that changed meanwhile is dropped.
  H.feed("<CR>")
  reply, delay = { items = { { insertText = "STALE" } } }, 300
  local n = #requests
  H.feed("x")
  H.wait_for("a request after typing x", function()
    return #requests > n
  end, 2000)
  reply = { items = {} }
  H.feed("y")
  H.sleep(700)
  H.eq(nil, H.ghost(buf), "the stale reply is not shown")
  delay = 0

  -- Mid-line: the inline ghost text sits between the cursor and the rest of the line.
  reply = { items = { { insertText = "sorted(", range = { start = pos(0, 6), ["end"] = pos(0, 6) } } } }
  H.feed("<Esc>")
  H.wait_for("Normal mode", function()
    return vim.api.nvim_get_mode().mode == "n"
  end, 2000)
  vim.api.nvim_win_set_cursor(0, { 1, 5 })
  H.feed("a") -- Insert mode at column 6, between `f` and `(`
  g = H.wait_ghost(buf, "mid-line ghost text", 3000)
  H.eq({ "sorted(", 0, 6 }, { g.text, g.row, g.col }, "mid-line ghost")
  H.eq("def f(items):", vim.api.nvim_get_current_line(), "the line itself is unchanged")
  -- Moving away clears it (the new request gets nothing).
  reply = { items = {} }
  H.feed("<Left>")
  H.wait_for("cleared after moving away", function()
    return H.ghost(buf) == nil
  end, 2000)
  -- Invoked request: <M-]> with nothing shown.
  reply = { items = {} }
  H.feed("<C-]>")
  local before = #requests
  H.feed("<M-]>")
  H.wait_for("an invoked request", function()
    return #requests > before and requests[#requests].context.triggerKind == 1
  end, 2000)
  -- Several items: <M-]> / <M-[> cycle through them.
  reply = { items = { { insertText = "one" }, { insertText = "two" } } }
  H.feed("<M-]>")
  H.wait_for("first of two", function()
    return H.ghost(buf) and H.ghost(buf).text == "one"
  end, 2000)
  H.feed("<M-]>")
  H.wait_for("second of two", function()
    return H.ghost(buf) and H.ghost(buf).text == "two"
  end, 2000)
  H.feed("<M-[>")
  H.wait_for("back to the first", function()
    return H.ghost(buf) and H.ghost(buf).text == "one"
  end, 2000)
  H.feed("<Esc>")
  H.wait_for("cleared on InsertLeave", function()
    return H.ghost(buf) == nil and vim.api.nvim_get_mode().mode == "n"
  end, 2000)
end, 30000)
