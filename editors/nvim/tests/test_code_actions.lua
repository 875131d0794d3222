-- Code actions on the real default model, in a scratch copy of examples/shop:
-- :NibDocstring inserts a docstring naming the function's parameters; :NibTests writes
-- pytest tests to the module's test file; both also appear in vim.lsp.buf.code_action().
local H = dofile(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h") .. "/helpers.lua")

H.run("code_actions", function()
  vim.o.showmode = false
  vim.cmd("runtime plugin/nib.lua")
  local dir = H.shop_copy()
  vim.cmd.cd(dir)
  local progress = {}
  vim.api.nvim_create_autocmd("LspProgress", {
    callback = function(args)
      local value = args.data and args.data.params and args.data.params.value
      if value and value.kind then
        progress[#progress + 1] = value.kind .. ":" .. tostring(value.title)
      end
    end,
  })
  local errors = {}
  local notify = vim.notify
  vim.notify = function(msg, level, ...)
    if level and level >= vim.log.levels.WARN then
      errors[#errors + 1] = msg
    end
    return notify(msg, level, ...)
  end
  require("nib").setup(H.nib_opts())
  vim.cmd.edit(dir .. "/pricing.py")
  local buf = vim.api.nvim_get_current_buf()
  H.wait_ready(buf)
  H.log("model ready")

  -- Both actions are offered through Neovim's own code action UI.
  local row = H.truthy(vim.fn.search("^def with_tax", "n"), "def with_tax")
  vim.api.nvim_win_set_cursor(0, { row, 4 })
  local titles
  local select = vim.ui.select
  vim.ui.select = function(items, opts, on_choice)
    titles = vim.tbl_map(function(item)
      return opts.format_item and opts.format_item(item) or item.action.title
    end, items)
    on_choice(nil)
  end
  vim.lsp.buf.code_action()
  H.wait_for("the code action menu", function()
    return titles
  end, 10000)
  vim.ui.select = select
  H.log("offered: " .. vim.inspect(titles))
  H.truthy(vim.tbl_contains(titles, "Add docstring for `with_tax` (nib)"), "docstring action offered")
  H.truthy(vim.tbl_contains(titles, "Generate unit tests for `with_tax` (nib)"), "tests action offered")

  -- :NibTests on `apply_discount`. It runs before :NibDocstring because the nib build this
  -- was written against answers ContentModified to any action on a document edited since it
  -- was opened (its didChange handler does not update the version the action checks).
  local row2 = H.truthy(vim.fn.search("^def apply_discount", "n"), "def apply_discount")
  vim.api.nvim_win_set_cursor(0, { row2 + 2, 4 })
  vim.cmd("NibTests")
  local test_buf = H.wait_for("the test file's buffer with tests", function()
    for _, b in ipairs(vim.api.nvim_list_bufs()) do
      local name = vim.api.nvim_buf_get_name(b)
      if name:match("test_pricing%.py$") and vim.api.nvim_buf_is_loaded(b) then
        local text = table.concat(H.lines(b), "\n")
        if text:find("def test_", 1, true) then
          return b
        end
      end
    end
  end, 90000)
  local test_file = vim.api.nvim_buf_get_name(test_buf)
  H.log(("%s:\n%s"):format(test_file, table.concat(H.lines(test_buf), "\n")))
  H.truthy(vim.startswith(test_file, vim.fn.resolve(dir)) or vim.startswith(test_file, dir), "test file in the workspace: " .. test_file)
  H.wait_for("the test file shown in a window", function()
    return vim.fn.bufwinid(test_buf) ~= -1
  end, 5000)
  H.eq(buf, vim.api.nvim_get_current_buf(), "the cursor stays in the source")
  vim.cmd("silent wall")
  H.truthy(table.concat(vim.fn.readfile(test_file), "\n"):find("def test_", 1, true), "the saved test file has tests")
  H.truthy(table.concat(H.lines(test_buf), "\n"):find("apply_discount", 1, true), "the tests call apply_discount")
  -- :NibDocstring on `with_tax`.
  vim.api.nvim_win_set_cursor(0, { row, 4 })
  local before = H.lines(buf)
  vim.cmd("NibDocstring")
  local lines = H.wait_for("the docstring", function()
    local now = H.lines(buf)
    return not vim.deep_equal(now, before) and now
  end, 90000)
  H.log("after :NibDocstring:\n" .. table.concat(vim.list_slice(lines, row, row + 12), "\n"))
  H.eq(before[row], lines[row], "the def line is kept")
  H.truthy(lines[row + 1]:match('^    """'), "a docstring opens right below the def line: " .. lines[row + 1])
  local closing
  for i = row + 1, #lines do
    if (i == row + 1 and lines[i]:match('""".*"""')) or (i > row + 1 and lines[i]:find('"""', 1, true)) then
      closing = i
      break
    end
  end
  H.truthy(closing, "the docstring is closed")
  local doc = table.concat(vim.list_slice(lines, row + 1, closing), "\n")
  H.truthy(doc:find("price", 1, true), "the docstring names `price`")
  H.truthy(doc:find("rate", 1, true), "the docstring names `rate`")
  H.eq(#before - row, #lines - closing, "the code after the docstring is kept")
  H.eq(vim.list_slice(before, row + 1, #before), vim.list_slice(lines, closing + 1, #lines), "function body unchanged")

  H.eq({}, errors, "no warnings or errors")
  H.log("progress: " .. table.concat(progress, ", "))
  local begins = vim.tbl_filter(function(p)
    return vim.startswith(p, "begin:")
  end, progress)
  H.truthy(#begins >= 2, "work-done progress for both actions")
end, 110000)
