-- Ghost text on the real default model: typing at an empty method body line shows an extmark
-- with virt_text in the `nib` namespace; accept word, dismiss, ask again (invoked) and accept
-- work through the default keys and insert exactly the text that was shown.
local H = dofile(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h") .. "/helpers.lua")

H.run("ghost_text", function()
  vim.o.showmode = false
  vim.cmd("runtime plugin/nib.lua")
  local dir = H.shop_copy()
  vim.cmd.cd(dir)
  require("nib").setup(H.nib_opts())
  vim.cmd.edit(dir .. "/cart.py")
  local buf = vim.api.nvim_get_current_buf()
  H.eq("python", vim.bo[buf].filetype, "filetype")
  H.wait_ready(buf)
  H.log("model ready")

  -- The empty body of `count_items`.
  local row = 21
  H.eq("    def count_items(self):", H.lines(buf)[row - 1], "method line")
  H.eq("        ", H.lines(buf)[row], "empty body line")
  vim.api.nvim_win_set_cursor(0, { row, 0 })

  -- :NibToggle off: typing shows nothing (and the server keeps its model loaded).
  local client = H.wait_ready(buf)
  local load_ms = require("nib.lsp").status[client.id].loadMs
  vim.cmd("NibToggle off")
  H.eq(false, require("nib").is_enabled(), "is_enabled() after :NibToggle off")
  H.feed("Aretur")
  H.wait_for("typed", function()
    return vim.api.nvim_get_current_line() == "        retur"
  end, 5000)
  H.sleep(1000)
  H.eq(nil, H.ghost(buf), "no ghost text while automatic suggestions are off")
  H.eq(false, require("nib.ghost").is_busy(buf), "no request while off")
  vim.cmd("NibToggle on")
  H.eq(true, require("nib").is_enabled(), "is_enabled() after :NibToggle on")

  -- Typing shows ghost text.
  H.feed("n")
  local g = H.wait_ghost(buf, "ghost text after typing `return`")
  H.eq({ state = "ready", loadMs = load_ms }, {
    state = require("nib.lsp").status[client.id].state,
    loadMs = require("nib.lsp").status[client.id].loadMs,
  }, "model not reloaded by the settings push")
  local line = vim.api.nvim_get_current_line()
  H.log(("ghost text %s after %s"):format(vim.inspect(g.text), vim.inspect(line)))
  H.eq("        return", line, "typed line")
  H.eq({ row - 1, #line }, { g.row, g.col }, "extmark at the cursor")
  H.eq("NibGhostText", g.details.virt_text[1][2], "highlight group")
  H.eq("inline", g.details.virt_text_pos, "virt_text_pos")
  H.eq(1, g.count, "one extmark")
  H.eq(g.text, require("nib").get_suggestion().text, "get_suggestion() is what is shown")
  H.eq(vim.api.nvim_get_hl(0, { name = "NibGhostText" }).link, "Comment", "NibGhostText links to Comment")

  -- Accept the next word with <M-w>: exactly that word is inserted, the rest stays shown.
  local word = require("nib.ghost").next_word(g.text)
  H.feed("<M-w>")
  H.wait_for("the word inserted", function()
    return vim.api.nvim_get_current_line() == line .. word
  end, 5000)
  H.eq({ row, #line + #word }, vim.api.nvim_win_get_cursor(0), "cursor after the word")
  if #word < #g.text then
    local rest = H.wait_for("the rest shown", function()
      local now = H.ghost(buf)
      return now and now.text ~= "" and now
    end, 5000)
    H.log(("after <M-w>: %s + ghost %s"):format(vim.inspect(vim.api.nvim_get_current_line()), vim.inspect(rest.text)))
  end

  -- Dismiss with <C-]>.
  H.wait_for("no request pending", function()
    return not require("nib.ghost").is_busy(buf)
  end, 30000)
  H.feed("<C-]>")
  H.wait_for("ghost text dismissed", function()
    return H.ghost(buf) == nil and not require("nib").is_visible()
  end, 5000)
  H.eq("i", vim.api.nvim_get_mode().mode, "still in Insert mode")

  -- Ask again (<M-]>, invoked) and accept all with <M-l>.
  H.feed("<M-]>")
  local g2 = H.wait_ghost(buf, "ghost text after <M-]>")
  local before = H.lines(buf)
  local cursor = vim.api.nvim_win_get_cursor(0)
  local cur_line = before[cursor[1]]
  H.log(("invoked: ghost %s after %s"):format(vim.inspect(g2.text), vim.inspect(cur_line)))
  H.eq(g2.text, require("nib").get_suggestion().text, "get_suggestion()")
  H.feed("<M-l>")
  local expected = vim.list_slice(before, 1, cursor[1] - 1)
  local inserted = vim.split(cur_line:sub(1, cursor[2]) .. g2.text .. cur_line:sub(cursor[2] + 1), "\n", { plain = true })
  vim.list_extend(expected, inserted)
  vim.list_extend(expected, vim.list_slice(before, cursor[1] + 1, #before))
  H.wait_for("the suggestion inserted", function()
    return vim.deep_equal(H.lines(buf), expected)
  end, 5000)
  local last = inserted[#inserted]
  H.eq({ cursor[1] + #inserted - 1, #inserted == 1 and cursor[2] + #g2.text or #last }, vim.api.nvim_win_get_cursor(0), "cursor after accepting")
  H.log("accepted: " .. vim.inspect(vim.list_slice(H.lines(buf), cursor[1], cursor[1] + #inserted - 1)))

  -- Leaving Insert mode clears whatever is shown.
  H.feed("<Esc>")
  H.wait_for("Normal mode without ghost text", function()
    return vim.api.nvim_get_mode().mode == "n" and H.ghost(buf) == nil
  end, 5000)
end)
