from raycat.cli import main

raise SystemExit(main())
