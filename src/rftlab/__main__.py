from rftlab.cli import main

raise SystemExit(main())
