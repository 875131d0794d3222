-- The documented Tab recipe (`*nib-tab*` in doc/nib.txt, loaded from there): with no
-- suggestion shown, <Tab> inserts a normal Tab; with one shown, <Tab> accepts it.
local H = dofile(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h") .. "/helpers.lua")

--- The Lua block that follows `*nib-tab*` in the help file.
local function recipe()
  local lines = vim.fn.readfile(H.plugin_dir .. "/doc/nib.txt")
  local code, state = {}, "search"
  for _, line in ipairs(lines) do
    if state == "search" and line:find("*nib-tab*", 1, true) then
      state = "tag"
    elseif state == "tag" and line:match(">lua$") then
      state = "code"
    elseif state == "code" then
      if line:match("^<") then
        break
      end
      code[#code + 1] = line
    end
  end
  assert(#code > 0, "no recipe found after *nib-tab* in doc/nib.txt")
  return table.concat(code, "\n")
end

H.run("tab_recipe", function()
  vim.o.showmode = false
  local code = recipe()
  H.log("recipe:\n" .. code)
  assert(loadstring(code, "nib-tab recipe"))()
  local dir = H.shop_copy()
  vim.cmd.cd(dir)
  require("nib").setup(H.nib_opts())
  vim.cmd.edit(dir .. "/cart.py")
  local buf = vim.api.nvim_get_current_buf()
  H.wait_ready(buf)
  H.log("model ready")

  -- What a plain <Tab> (no mappings) inserts at the empty body line with this buffer's
  -- options (the Python ftplugin's 'expandtab'/'softtabstop', 'smarttab').
  local row = 21
  H.eq("        ", H.lines(buf)[row], "empty body line")
  H.eq(1, vim.fn.maparg("<Tab>", "i", false, true).expr, "the recipe maps <Tab> with expr")
  local function plain_tab(expandtab)
    vim.bo[buf].expandtab = expandtab
    vim.api.nvim_buf_set_lines(buf, row - 1, row, false, { "        " })
    vim.api.nvim_win_set_cursor(0, { row, 0 })
    vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes("A<Tab><Esc>", true, false, true), "nx", false)
    return H.lines(buf)[row]
  end
  for _, expandtab in ipairs({ true, false }) do
    local want = plain_tab(expandtab)
    assert(vim.fn.strdisplaywidth(want) > 8 and want:match("^%s+$"), "a plain <Tab> inserted " .. vim.inspect(want))
    vim.api.nvim_buf_set_lines(buf, row - 1, row, false, { "        " })
    vim.api.nvim_win_set_cursor(0, { row, 0 })
    -- No suggestion can be shown right after entering Insert mode: the mapped <Tab> must
    -- fall through to the normal one.
    H.feed("A<Tab>")
    H.wait_for(("<Tab> to insert %s (expandtab=%s)"):format(vim.inspect(want), tostring(expandtab)), function()
      return H.lines(buf)[row] == want and vim.api.nvim_get_mode().mode == "i"
    end, 5000)
    H.log(("fell through: %s (expandtab=%s)"):format(vim.inspect(want), tostring(expandtab)))
    H.feed("<Esc>")
    H.wait_for("Normal mode", function()
      return vim.api.nvim_get_mode().mode == "n"
    end, 5000)
  end
  vim.bo[buf].expandtab = true

  -- With a suggestion shown, <Tab> accepts it.
  vim.api.nvim_buf_set_lines(buf, row - 1, row, false, { "        " })
  vim.api.nvim_win_set_cursor(0, { row, 0 })
  H.feed("Areturn")
  local g = H.wait_ghost(buf, "ghost text after typing `return`")
  local line = vim.api.nvim_get_current_line()
  H.log(("ghost text %s after %s"):format(vim.inspect(g.text), vim.inspect(line)))
  local before = H.lines(buf)
  H.feed("<Tab>")
  local expected = vim.list_slice(before, 1, row - 1)
  vim.list_extend(expected, vim.split(line .. g.text, "\n", { plain = true }))
  vim.list_extend(expected, vim.list_slice(before, row + 1, #before))
  H.wait_for("the suggestion accepted by <Tab>", function()
    return vim.deep_equal(H.lines(buf), expected)
  end, 5000)
  H.log("accepted: " .. vim.inspect(H.lines(buf)[row]))
end)
