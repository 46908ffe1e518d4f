"""Print the README's set-up block (the first ```bash block under "## Set-up"), as is.

CI runs exactly these lines in a fresh virtual environment, so a README command that fails
fails CI.
"""

import re
import sys
from pathlib import Path

text = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md").read_text()
section = re.search(r"^## Set-up.*?$(.*?)^## ", text, re.S | re.M)
block = section and re.search(r"^```bash\n(.*?)^```", section.group(1), re.S | re.M)
if not block:
    sys.exit("CI: README.md has no ```bash block under '## Set-up'")
print(block.group(1), end="")
