-- The plugin without a model: commands, help tags, options, the server command lookup, and
-- the word/line splitting used by accept_word / accept_line.
local H = dofile(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h") .. "/helpers.lua")

H.run("plugin", function()
  -- plugin/nib.lua: commands and the highlight group, without setup().
  vim.cmd("runtime plugin/nib.lua")
  for _, cmd in ipairs({ "NibDocstring", "NibTests", "NibToggle", "NibStatus" }) do
    H.eq(2, vim.fn.exists(":" .. cmd), ":" .. cmd .. " exists")
  end
  H.eq("Comment", vim.api.nvim_get_hl(0, { name = "NibGhostText" }).link, "NibGhostText -> Comment")
  vim.cmd("colorscheme default")
  H.eq("Comment", vim.api.nvim_get_hl(0, { name = "NibGhostText" }).link, "kept after :colorscheme")
  vim.api.nvim_set_hl(0, "NibGhostText", { fg = "#808080", italic = true })
  require("nib.config").highlights()
  H.eq(true, vim.api.nvim_get_hl(0, { name = "NibGhostText" }).italic, "a user's NibGhostText is kept")

  -- The help file: tags generate without errors and name the documented entries.
  local doc = vim.fn.tempname()
  vim.fn.mkdir(doc, "p")
  vim.fn.writefile(vim.fn.readfile(H.plugin_dir .. "/doc/nib.txt"), doc .. "/nib.txt")
  vim.cmd("helptags " .. vim.fn.fnameescape(doc))
  local tags = table.concat(vim.fn.readfile(doc .. "/tags"), "\n")
  for _, tag in ipairs({ "nib-tab", "nib.setup()", ":NibDocstring", ":NibTests", ":NibToggle", ":NibStatus", "hl-NibGhostText", "nib.accept()", "nib.is_visible()", "nib-health" }) do
    H.truthy(tags:find(tag, 1, true), "help tag " .. tag)
  end

  -- Options are checked.
  local ok, err = pcall(require("nib.config").set, { debounce = "soon" })
  H.truthy(not ok and err:find("debounce", 1, true), "wrong type rejected: " .. tostring(err))
  ok, err = pcall(require("nib.config").set, { keymap = {} })
  H.truthy(not ok and err:find("keymap", 1, true), "unknown option rejected: " .. tostring(err))
  local o = require("nib.config").set({ filetypes = { "lua" }, keymaps = { accept = "<C-l>" }, settings = { threads = 2 } })
  H.eq({ "lua" }, o.filetypes, "filetypes replaced")
  H.eq("<C-l>", o.keymaps.accept, "keymap overridden")
  H.eq("<M-w>", o.keymaps.accept_word, "other keymaps kept")
  H.eq(150, o.debounce, "default debounce")
  H.eq(false, require("nib.config").set({ keymaps = false }).keymaps, "keymaps = false")

  -- The server command: the option, else nib on $PATH, else this checkout's build.
  local lsp = require("nib.lsp")
  local path = vim.env.PATH
  vim.env.PATH = "/usr/bin:/bin"
  local cmd, how = lsp.resolve_cmd(nil)
  H.eq({ H.repo .. "/target/release/nib" }, cmd, "the checkout's build: " .. how)
  -- Also when the plugin is installed as a symlink (a `pack/*/start/` entry).
  local pack = vim.fn.tempname() .. "/pack/nib/start"
  vim.fn.mkdir(pack, "p")
  vim.uv.fs_symlink(H.plugin_dir, pack .. "/nib")
  local linked = dofile(pack .. "/nib/lua/nib/lsp.lua")
  H.eq({ H.repo .. "/target/release/nib" }, (linked.resolve_cmd(nil)), "the checkout's build through a symlink")
  local bin = vim.fn.tempname()
  vim.fn.mkdir(bin, "p")
  vim.fn.writefile({ "#!/bin/sh", "exit 0" }, bin .. "/nib")
  vim.fn.setfperm(bin .. "/nib", "rwxr-xr-x")
  vim.env.PATH = bin .. ":/usr/bin:/bin"
  cmd = lsp.resolve_cmd(nil)
  H.eq({ bin .. "/nib" }, cmd, "nib on $PATH first")
  vim.env.PATH = path
  H.eq({ "/opt/nib", "serve" }, (lsp.resolve_cmd({ "/opt/nib", "serve" })), "cmd option")
  H.eq({ "/opt/nib" }, (lsp.resolve_cmd("/opt/nib")), "cmd option as a string")

  -- Settings go out as an object even when empty.
  require("nib.config").set({})
  H.eq("{}", vim.json.encode(lsp.settings()), "empty settings encode as an object")
  require("nib.config").set({ settings = { completion = { maxTokens = 32 } } })
  H.eq({ completion = { maxTokens = 32, enabled = false } }, lsp.settings({ completion = { enabled = false } }), "settings with an override")

  -- accept_word / accept_line splitting.
  local g = require("nib.ghost")
  local cases = {
    { g.next_word, " len(set(self.items))", " len" },
    { g.next_word, "(set(self.items))", "(" },
    { g.next_word, "self.items = []", "self" },
    { g.next_word, ".items = []", "." },
    { g.next_word, " = []", " = " },
    { g.next_word, "\n        return x", "\n        " },
    { g.next_word, "   ", "   " },
    { g.next_line, "if item:\n    print(i)", "if item:" },
    { g.next_line, "\n    print(i)\nelse:", "\n    print(i)" },
    { g.next_line, "x", "x" },
  }
  for _, case in ipairs(cases) do
    H.eq(case[3], case[1](case[2]), "split " .. vim.inspect(case[2]))
  end

  -- Neovim 0.12's vim.lsp.inline_completion, stubbed: nib.nvim picks it and maps its keys
  -- and functions onto it (enable on attach, get to accept, on_accept for partial accepts,
  -- select to cycle).
  local calls = {}
  local partial
  vim.lsp.inline_completion = {
    enable = function(on, filter)
      calls[#calls + 1] = { "enable", on, filter.bufnr }
    end,
    get = function(opts)
      calls[#calls + 1] = { "get", opts.on_accept ~= nil }
      if opts.on_accept then
        partial = opts.on_accept({
          insert_text = "    return len(set(self.items))",
          range = { start_row = 0, start_col = 0, end_row = 0, end_col = 10 },
        })
      end
      return true
    end,
    select = function(opts)
      calls[#calls + 1] = { "select", opts.count }
    end,
  }
  require("nib.config").set({})
  H.eq(true, require("nib.inline").use_native(), "native when vim.lsp.inline_completion exists")
  vim.cmd.enew()
  local nbuf = vim.api.nvim_get_current_buf()
  vim.api.nvim_buf_set_lines(nbuf, 0, -1, false, { "    return" })
  require("nib.inline").attach({ id = 999 }, nbuf)
  H.eq({ { "enable", true, nbuf } }, calls, "enable(true, { bufnr }) on attach")
  H.eq(1, vim.fn.maparg("<M-l>", "i", false, true).buffer, "buffer-local accept key")
  local native_ns = vim.api.nvim_create_namespace("nvim.lsp.inline_completion")
  vim.api.nvim_win_set_cursor(0, { 1, 0 })
  H.feed("A")
  H.wait_for("Insert mode", function()
    return vim.api.nvim_get_mode().mode == "i"
  end, 2000)
  H.eq(false, require("nib").is_visible(), "nothing shown")
  vim.api.nvim_buf_set_extmark(nbuf, native_ns, 0, 10, { virt_text = { { " len", "ComplHint" } }, virt_text_pos = "overlay" })
  H.eq(true, require("nib").is_visible(), "Neovim's ghost text counts as shown")
  calls = {}
  H.eq(true, require("nib").accept(), "accept()")
  H.eq(true, require("nib").accept_word(), "accept_word()")
  H.eq("    return len", partial.insert_text, "accept_word() keeps the typed part and one word")
  require("nib").next()
  require("nib").prev()
  H.eq({ { "get", false }, { "get", true }, { "select", 1 }, { "select", -1 } }, calls, "native calls")
  vim.lsp.inline_completion = nil
  H.feed("<Esc>")
  H.wait_for("Normal mode", function()
    return vim.api.nvim_get_mode().mode == "n"
  end, 2000)
  vim.cmd("bwipeout!")

  -- Without a server: the API answers and commands say what is wrong instead of failing.
  H.eq(false, require("nib").is_visible(), "is_visible() without nib")
  H.eq(false, require("nib").accept(), "accept() without nib")
  H.eq(nil, require("nib").get_suggestion(), "get_suggestion() without nib")
  H.eq("", require("nib").statusline(), "statusline() without nib")
  local lines = require("nib").status()
  H.truthy(lines[1]:find("no server running", 1, true), "status without a server: " .. vim.inspect(lines))
end, 20000)
