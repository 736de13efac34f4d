"""Cue tables for the built-in query-type classifier (`engine.classify`).

Each label maps weights to ``|``-separated cues. Latin cues match at the start of a word in the
lower-cased instruction part of a prompt; a trailing ``*`` lets the cue match any word that starts
with it (``summar*`` matches "summary", "summarise"), otherwise the cue must end at a word
boundary. CJK cues are plain substrings (those scripts have no spaces). The cues are *intent*
phrases (instruction verbs, request shapes) in English, Spanish, German, French, Japanese and
Chinese, not topics: the classifier has to generalise to prompts about anything.
"""

from __future__ import annotations

import re

# fmt: off
LATIN_CUES: dict[str, tuple[tuple[float, str], ...]] = {
    "code": (
        (3.5, "regex*|regexp*|regular expression*|refactor*|code review|pytest|dockerfile*|makefile|segfault"
         "|segmentation fault|null pointer|nullpointer*|linked list|time complexity|big o|big-o|one-liner"
         "|oneliner|unit test*|typescript|javascript|powershell|kubectl|kubernetes|django|fastapi|flexbox"
         "|node.js|npm|list comprehension|race condition|deadlock*|memory leak*|borrow checker"
         "|merge conflict*|git|github|gitlab|bitbucket|ssh key*|publickey|permission denied|golang|kotlin|php"
         "|awk|bash|zsh|sql|mysql|postgresql|sqlite|pandas|numpy|webpack|css|html|jsx|tsx|docker*|compiler"
         "|compile*|syntax error|stackoverflow|debug*|linter|eslint|mypy"),
        (2.5, "stack trace|traceback|python|pyhton|java|js|ts|rust|ruby|swift|scala|haskell|perl|lua|elixir"
         "|clojure|dart|flutter|react|vue|angular|svelte|nextjs|next.js|express.js|expressjs|flask"
         "|spring boot|laravel|rails|jquery|postgres|mongodb|redis|graphql|api endpoint*|endpoint*|rest api"
         "|http request*|json schema|yaml|terraform|ansible|nginx|k8s|helm|ci pipeline|github actions|gitlab"
         "|repo|repository|commit*|branch*|pull request|snippet*|script*|code|coding|codebase|function*"
         "|method*|variable*|array*|struct*|pointer*|recursion|recursive|async|await|promise*|callback*"
         "|closure*|exception*|runtime error|buggy|stack overflow|compile|lambda*|hashmap|hash map|treemap"
         "|dictionary|dict|tuple*|iterator*|generator*|decorator*|constructor*|inheritance|interface*"
         "|typescript|type error|typeerror|valueerror|keyerror|cli|shell|terminal|command line|linux|unix"
         "|macos terminal|cron*|env var*|environment variable*|implement*|algorithm*|data structure*"
         "|binary search|sorting algorithm|orm|schema|index on|useeffect|usestate|component*|props|div"
         "|selector*|framework|library|dependency|dependencies|pip install|virtualenv|venv|conda|jupyter"
         "|notebook cell|vscode|vs code|ide|sdk|oauth|jwt|cors|websocket*|ssh|cargo|maven|gradle|rebase"
         "|unittest|jest|mocha|junit|selenium|playwright|programmatically|program|programs|programmer*|loop"
         "|loops|for loop|while loop|undefined|nan|null|boolean|int|string|strings|integer overflow"
         "|off-by-one|off by one|indentation|semicolon|bracket*|csv file|parse json|json file|regex|mutex*"
         "|goroutine*|channel*|microcontroller|arduino|raspberry pi|excel formula|spreadsheet formula|vlookup"
         "|xlookup|google sheets formula|macro*|vba|post request|get request|put request|api call|api request"
         "|axios|curl|json body|request body|fehlermeldung|programmier*|skript|funktion|abfrage|datenbank"
         "|función|programa|base de datos|fonction|programme|base de données"),
        (1.5, "error|errors|fails|failing|failed|crash*|exit code|build|deploy*|server|database|table|column*|rows"
         "|file|files|folder*|directory|directories|app|website|web page|browser|frontend|backend|install*"
         "|version|upgrade|config*|log|logs|output|prints|print|returns|return|input|class|classes|object*"
         "|module*|import*|type|types|test|tests|cache|performance|optimi*|speed up|slow|query|queries|bug"
         "|bugs|crashes|package|thread*|programming|api|apis|fetch|erreur|fehler"),
    ),
    "math": (
        (4.0, "bayes*|derivative*|integral*|integrate|antiderivative|differentiate|differential equation*"
         "|determinant|eigenvalue*|eigenvector*|standard deviation|confidence interval|x-intercept*"
         "|y-intercept*|solve for|how many different|how many possible|how many distinct"
         "|how many combinations|how many arrangements|quadratic*|polynomial*|logarithm*|binomial theorem"
         "|by induction|taylor series|maclaurin|without replacement|how many ways|normally distributed"
         "|expected value|inequalit*|inéquation*|ableitung*|dérivée*|derivada*|intégrale*|nullstelle*"
         "|ecuación|ecuaciones|équation*|gleichung*|gleichungssystem"),
        (3.0, "equation*|prove|proof|probability|probabilities|variance|median|percentile*|hypothesis test|p-value"
         "|z-score|simplify|factori*|matrix|matrices|vector*|perimeter|circumference|radius|diameter"
         "|hypotenuse|pythagor*|triangle*|divisible|prime number*|integer*|permutation*|combination*"
         "|combinatoric*|geometric series|arithmetic series|infinite series|sequence|converge*|diverge*"
         "|limit of|the limit|slope|tangent line|area of|volume of|surface area|compounded|compound interest"
         "|interest rate|apr|mortgage payment|monthly payment|square root|cube root|exponent*|fraction*"
         "|decimal*|percentage|percent of|mental math|without a calculator|multiply|multiplied|divide|divided"
         "|calculate|calculat*|compute|computing the|evaluate the|theorem|lemma|irrational|rational number*"
         "|odd integer*|even integer*|consecutive|remainder|modulo|gcd|lcm|greatest common|least common|cos"
         "|ln|sqrt|pi|radians|dice|marbles|lottery|odds of|chance that|chance of|expected number|mean of"
         "|average of|rate of change|maximi*|minimi*|maximum value|minimum value|local max*|local min*|vertex"
         "|parabola|asymptote*|regression line|correlation coefficient|sample size|margin of error"
         "|estimat* the probability|resuelve|resolver|resuelva|calcula|calcular|calcule*|calculer|berechne*"
         "|berechnen|beweise*|bestimme|löse|résous|résoudre|démontre*|demuestra*|demostrar|probabilidad*"
         "|probabilité*|wahrscheinlichkeit*|fläche*|flächeninhalt|volumen|aire|área|raíz|wurzel|racine|cône"
         "|kegel|cono|rayon|límite|grenzwert|porcentaje|prozent|pourcentage|average speed|velocidad media"
         "|velocidad|promedio|durchschnittsgeschwindigkeit|geschwindigkeit|vitesse moyenne|vitesse|halla"
         "|hallar|cuánto es|cuanto es|durchschnitt|wie viel ist|wie viel sind|combien font|combien fait"),
        (1.5, "sum|sums|total|product of|ratio|rate|speed|km/h|mph|m/s|per hour|per second|per year|per month"
         "|interest|salary|on average|what percentage|in what year|false positive*|false negative*|tip on"
         "|discount of|catch up|minimum|maximum|graph|formula|formulas|math|maths|mathematical*|numbers"
         "|number of"),
    ),
    "reasoning": (
        (3.0, "trade-off*|tradeoff*|trade off*|pros and cons|walk me through|walk through|think it through"
         "|think through|think this through|reason it through|reason through|reason about|the reasoning"
         "|second-order|second order|root cause*|hypothes*|what would you do|what would you try"
         "|what would you recommend|which would you recommend|what would you consider|would you recommend"
         "|under what assumptions|what could go wrong|flaw in|is that argument|argument sound|fallac*"
         "|does it follow|logically|logic puzzle|puzzle*|riddle*|brain teaser*|brainteaser*|knights|knaves"
         "|always lie*|always tells the truth|always tell the truth|tells the truth|week-by-week|day-by-day"
         "|step-by-step plan|prioritized plan|prioritised plan|in what order|what order|which order"
         "|competing explanations|what else could explain|correlation|causation|help me think"
         "|help me figure out|help me decide|conclu*|must be true|necessarily true|logically follow*"
         "|makes more sense|make more sense|which makes|which option|which one should|what would you choose"
         "|which would you choose|defend your|defend the|make the case|the case for|the case against"
         "|stronger argument|strongest argument|better argument|argument for|argument against|arguments for"
         "|how would you prioriti*|how should we prioriti*|how would you approach|how would you decide"
         "|how would you handle|main factors|key factors|critique|critically|intuitively|why or why not"
         "|what is the order|the order in which|best order|right order|make a case|what questions should"
         "|what was the order|who is lying|who lied|who is telling the truth|which one is lying"
         "|possible causes|what are the causes|both sides|consider both|if you were|if you had to|suppose you"
         "|can we say|can we infer|does that mean|does this mean|peut-on dire|peut-on conclure"
         "|peut-on en déduire|en déduire|explique pourquoi|se puede decir|se puede concluir|razona|wäge"
         "|kann man sagen|folgt daraus|lässt sich schließen|pour et le contre|le pour et le contre"
         "|vaut-il mieux|vaut mieux|wie würdest du|würdest du|ursache*|begründe*|lohnt es sich|vale la pena"
         "|qué conviene|help me weigh|why is that wrong|why is it wrong|why is this wrong|weigh the"
         "|weigh them|weigh it|weigh up|choosing between|choose between|deciding between|decide between"
         "|what factors|which factors|factors should|what are the risks|the risks|dilemma|razonar"
         "|razonamiento|ventajas y desventajas|pros y contras|qué harías|abwägen|abwägung|vor- und nachteile"
         "|vor und nachteile|was würdest du|avantages et inconvénients|inconvénients|que ferais-tu|raisonne*"
         "|raisonnement|énigme*|acertijo*|rätsel|why do you think|which seems strongest|which is strongest"
         "|most likely explanation*|likely explanations|was spricht dafür|was spricht dagegen"
         "|dafür und dagegen|pro und contra|argumentiere|por qué crees|argumenta|justifica|justifie|argumente"
         "|pour et contre"),
        (2.0, "compare|comparing|comparison|versus|vs|should i|should we|should a|should our|which should"
         "|which is better|is it better|better choice|better option|better off|worth it|decide|decision*"
         "|risks|implications|consequences|prioriti*|factors|decid*|argument|arguments|rigorous|plan|plans"
         "|planning|strategy|strategies|estimate|estimating|assumptions|assume|explain why|why might"
         "|why would|why did|why do some|argue|evaluate|assess|analyze|analyse|analysis|analyzing|analysing"
         "|deduce|sound|scenario*|what if|options|consider|considering|considerations|recommend*|sequence"
         "|order of|dependencies|bottleneck*|likely cause*|likely causes|how would you|how should we"
         "|how should i|how do you|how can you|how does he|how does she|who owns|who is in|rank|ranked"
         "|fairest|ethical|justify|convince|counterargument*|objection*|weigh|think about|angles|what else"
         "|most people|pèse|peser|es mejor|ist es besser|vorgehen|überleg*|how they interact|and why"
         "|which do you|which would you|causes|infer|suppose|argumente|lieber|sollte man|sollte eine|debería"
         "|deberíamos|conviene|decisión|decidir|analiza*|riesgos|compara*|factores|estrategia|entscheid*"
         "|sinnvoller|sollte ich|sollten wir|faktoren|risiken|vergleich*|analysier*|strategie|devrais-je"
         "|devrions-nous|décid*|décision|risques|compar*|analyse*|facteurs|stratégie|principes|équité"
         "|équitable|le plus juste|recommandation|logique|lógica|logik|explanations|how to check each"
         "|how to test each|how i'd test|warum|pourquoi|por qué|priorisier*|vergleiche|planifica"),
    ),
    "creative": (
        (3.5, "poem*|poetry|haiku*|limerick*|sonnet*|villanelle*|ballad*|ode to|lyrics|song about|rap verse"
         "|rap about|short story|bedtime story|fairy tale|fairytale|fable*|micro-story|microfiction"
         "|flash fiction|six-word story|story about|story where|story in which|a story|joke*|pun|puns|slogan*"
         "|tagline*|jingle*|toast for|wedding toast|wedding speech|best man speech|best-man speech|pep talk"
         "|motivational speech|role-play|roleplay|role play|in character|stay in character|pretend you*"
         "|pretend to be|act as a|as if you were|in the style of|fictional|invent a|invent an|make up a"
         "|come up with|screenplay|monologue|sci-fi story|ghost story|horror story|love letter|poème*|poema*"
         "|gedicht*|cuento*|chiste*|blague*|witz|witze|märchen|conte|contes|fabel|eslogan*|chanson*|canción*"
         "|reim*|rima*|relato*|invente*|inventa*|erfinde*|geschichte über|histoire sur|historia sobre"
         "|story opening|in the voice of|breakup text|breakup letter|opening paragraph|opening line*"
         "|knock-knock|dad joke*|pickup line*|tongue twister*|acrostic|mnemonic*|catchphrase*|lullab*"
         "|nursery rhyme*|anthem|hymn|serenade|elegy|epitaph|wedding vows|diary entry|journal entry|folktale*"
         "|folk tale*|parable*|allegor*|satir*|parod*|skit|sketch comedy|plot twist|cliffhanger|voiceover"
         "|trailer|couplet*|stanza*|quatrain*|tanka|free verse|trabalenguas|dichte|dichte ein|lied über"
         "|chanson sur|canción sobre"),
        (2.5, "story|stories|tale|novel|verse|rhyme*|rhyming|song|rap|speech|toast|dialogue|scene|in character"
         "|villain*|hero|heroine|backstory|plot|fiction|character|clever|describe a|fantasy|sci-fi|noir|epic"
         "|creative|imaginative|imagine a|imagine an|whimsical|funny|humorous|witty|playful|catchy|heartfelt"
         "|creepy|spooky|dramatic|poetic|names for|name ideas|name for a|brand name*|product name*"
         "|catchy name*|captions|caption for|greeting card|birthday message|invitation text|out-of-office"
         "|auto-reply|from the perspective of|point of view of|narrat*|laugh|make it rhyme|historia"
         "|geschichte|histoire|lustig*|drôle|gracios*"),
        (1.0, "imagine|imagine you're|imagine you are|imagine that"),
    ),
    "summarize": (
        (4.0, "summar*|sum up|sums up|sum it up|summing up|tl;dr|tldr|tl dr|condense*|boil down|boils down"
         "|boil it down|boil this down|in a nutshell|gist|synopsis|key takeaways|takeaways|main takeaways"
         "|executive summary|cliff notes|cliffsnotes|résum*|resumen|resumir|resúm*|zusammenfass*|kurzfassung"
         "|synthèse|synthétise*|sintetiza*|précis|recap this|recap of|recap the"),
        (3.0, "recap|shorten|shorter version|short version|main points|key points|main idea*|main argument"
         "|the upshot|in brief|in short|brief overview|high-level overview|overview of|distill*|digest of"
         "|in one sentence|in a sentence|in two sentences|in three sentences|in one line|in one paragraph"
         "|one-sentence|one sentence|what's this about|what is this about|highlights|kernaussage*|en bref"
         "|points clés|en pocas palabras|puntos clave|worum geht es|das wichtigste|in einem satz|de qué trata"
         "|idea principal|de quoi parle|idée principale|en una frase|en une phrase"),
        (1.5, "bullet*|sentences|short|briefly|brief|concise*|overview|words max|max words|under 100 words"
         "|for the exec*|for my boss|for a newsletter|for a tweet|into a tweet|as a tweet|blurb"
         "|half its length|half the length|stichpunkt*|puntos|points"),
    ),
    "extract": (
        (4.0, "extract*|extrae*|extraer|extraiga|extrai*|extray*|extrahier*|herausziehen|herausschreiben|pull out"
         "|pull the|parse this|parse the|parse these|named entities|as json|in json|into json|json object"
         "|json array|json list|give me json|return json|output json|json format|formato json|format json"
         "|au format json|als json|classify|classif*|categori*|catégoris*|kategorisier*|klassifizier*"
         "|clasifica*|sentiment"),
        (3.5, "list of every|list of all|a list of every|a list of all|just list|only list|list only|fill in"
         "|fill out|detect the|which language is|what language is|named in|mentioned in|referenced in"
         "|listed in|locate all|locate every|erwähnt*|genannt|mencionad*|se mencionan|mentionné*|cité*|citées"),
        (3.0, "parse|key/value|key value|key-value pairs|key value pairs|identify the|identify all|identify every"
         "|identify each|list all|list every|list each|list the names|list them|just list|find all|find every"
         "|find each|which ones mention*|mentioned in|are mentioned|is mentioned|referenced in|label each"
         "|label whether|tag each|which category|what category|what type of|spam or|is this spam"
         "|positive or negative|positive, negative|as a table|into a table|in a table|table with columns"
         "|as csv|return csv|into csv|in csv|csv|into fields|structured data|key-value|fill in the"
         "|answer with the category|one word|output only|only the|entities|action items|dates and deadlines"
         "|each person|each of these|each review|each line|each sentence|each message|each item|every email"
         "|every url|every date|every name|tabla|tableau|tabelle|clasifica|classe ces|identifica*|identifie*"
         "|relève*|relever|saca|sacar|liste alle|auflisten|aufführen|herausfinden|als liste|als tabelle"
         "|nenne alle|finde alle|alle namen|positiv oder negativ|welche termine|welche daten|welche personen"
         "|welche namen|welche orte|welche städte|enumera|qué personas|qué nombres|qué fechas|en una tabla"
         "|positivo o negativo|positivo, negativo|sous forme de tableau|quels sont les noms"
         "|positif ou négatif|sentimiento|stimmung"),
        (3.0, "sort these|group these|sort the following|group the following|organize these|part of speech"
         "|into categories|by category|count how many|count the number|count the occurrences|number of times"
         "|how many times does|how many times do|how many times the"),
        (2.0, "each of these|only the|convert this|turn this|which of these|which of the following|give me all"
         "|give me every|nothing else|no explanation|no commentary|reply with|respond with|answer with"
         "|answer only|numbers only|names only|only the numbers|only the names|just the names"
         "|just the numbers|hashtag*"),
        (1.0, "json|fields|field|columns|table|list|count|counts|names|dates|amounts|numbers from|from this"
         "|from the following|from these|mentioned|label|labels|tag|tags|format|normali*|csv"),
    ),
    "translate": (
        (4.0, "translat*|traduc*|tradúc*|tradu*|traduz*|locali*|übersetz*|übersetzung*|how do you say|how do i say"
         "|how would i say|how would you say|how to say|how can i say|how do we say|what's the word for"
         "|what is the word for|cómo se dice|como se dice|comment dit-on|comment on dit|wie sagt man"
         "|literally mean*|mean in english|means in english|say in english|say it in|in english please"
         "|was heißt|wie heißt|que veut dire|qu'est-ce que veut dire|qué significa|que significa"),
        (2.0, "what does it say|what does this say|put this into|put it into|render this|render it"),
    ),
    # greetings count fully only in short messages (engine.classify discounts them in long ones)
    "greeting": (
        (3.0, "hi|hello|hey|heya|hiya|howdy|good morning|good evening|good afternoon|good night|how are you"
         "|how's it going|how is it going|what's up|whats up|sup|thanks|thank you|thx|ty|cheers|bye|goodbye"
         "|see you|see ya|ok bye|hola|buenos días|buenas|qué tal|que tal|gracias|adiós|bonjour|salut|bonsoir"
         "|merci|au revoir|ça va|comment vas-tu|comment allez-vous|hallo|guten morgen|guten tag|guten abend"
         "|servus|moin|danke|tschüss|wie geht's|wie geht es|ciao|olá|obrigado|obrigada"),
    ),
    "chat": (
        (2.0, "hard to learn|easy to learn|worth learning|too old to|your favorite|your favourite|do you like"
         "|do you think|what do you think|just curious|curious|quick recommendation|quick question"
         "|quick opinion|your opinion|any tips|tips for|some tips|advice|any ideas|ideas?|recommend a"
         "|recommend some|recommendations|suggest a|suggestions|stand for|stands for|tell me something"
         "|fun fact*|is it safe|is it normal|is it bad|is it ok|is it okay|is it weird|is it true"
         "|is it healthy|what's a good|what is a good|what's a polite|polite way|good way|how do i get rid"
         "|how do i keep|how can i keep|how do i stay|how can i stay|do you know|who wrote|who painted"
         "|who invented|who discovered|who is the|who was the|who won|when did|when was|capital of|how tall"
         "|how old|how big|how deep|how many people|what time|time zone|weather|best season|most popular"
         "|right now|nowadays|these days|where is the|what year|can dogs|can cats|nervous|feeling"
         "|stay motivated|motivation|bored|lonely|cheer up|consejo*|recomienda*|recomiendas|kennst du|tipps"
         "|empfiehl*|empfehlung*|conseil*|recommande*|tu connais|vous connaissez|quelle est la meilleure"
         "|learning to code|learn to code|learn coding|learn programming|what happened|how hard is it"
         "|in simple terms|simple terms|layman's terms|in plain words|eli5|explain like i'm five"),
        (1.0, "cuál es|quién|wer ist|qui est|wie viele|combien|cuántos|cuántas|to learn|learning"
         "|how long does it take|how long will it take"),
    ),
}
# fmt: on

# Phrases that contain a cue word but mean something else: matching them consumes the words.
LATIN_CUES["_"] = (
    (0.0, "postal code|zip code|area code|dress code|promo code|discount code|coupon code|code of conduct"
          "|country code|qr code|morse code|tax code|source code of the|code name|codename"),
)  # fmt: skip

# fmt: off
CJK_CUES: dict[str, tuple[tuple[float, str], ...]] = {
    "code": (
        (3.5, "コード|プログラム|スクリプト|関数を|実装|デバッグ|コンパイル|バグ|エラー|代码|程序|脚本|编程|报错"
         "|调试|编译|线程|单例|数组|変数|配列|正規表現|正则"),
        (1.5, "関数|函数|变量|リスト|列表|ファイル|文件|卡住|死锁"),
    ),
    "math": (
        (4.0, "方程式|微分|積分|导数|积分|方程|確率|概率|标准差|標準偏差|极限|極限|行列式"),
        (3.0, "計算|计算|求め|面積|面积|体積|体积|半径|証明|证明|最小值|最大值|最小値|最大値|三角形|平均|解いて"
         "|解方程|外接円|外接圆|边长|角度|百分之|パーセント|周长|长方形|正方形|圆的|平方|乘以|除以|等于|几何"
         "|数学|利息|速度|周の長さ|割合|何パーセント|合計|いくら|何円|何cm|何センチ|多少厘米|多少米|多少元"),
        (1.0, "求"),
    ),
    "reasoning": (
        (3.0, "利弊|权衡|优缺点|推理|谜题|パズル|推論|メリットとデメリット|デメリット|どう組めば|どう決めれば"),
        (3.0, "根拠|議論|论证|推断|哪些方面|如果你是|怎么看"),
        (2.0, "考えて|どちらが|理由|给出建议|提出建议|思いますか|どう思う|原因|分析して|你会|メリット|判断|比較"
         "|計画|順番|論理|リスク|検討|決め|選ぶべき|应该|哪个更好|分析|计划|逻辑|风险|考虑|因素|选择|比较"
         "|怎么办|安排|为什么|なぜ|どうすれば|你觉得|如何看待|假设|どう思いますか|べきか|すべきか|判断して"
         "|論じて|検討して|賛成|反対|長所|短所"),
    ),
    "creative": (
        (3.5, "詩|物語|童話|小説|俳句|短歌|ショートショート|ジョーク|キャッチコピー|歌詞|お話|ストーリー|诗|故事"
         "|笑话|童话|小说|歌词|口号|广告语|对联|寓言|散文|作文|段子|绕口令|剧本|台词|文案|川柳|エッセイ|台本"
         "|脚本|セリフ|キャッチフレーズ"),
    ),
    "summarize": (
        (4.0, "要約|まとめて|まとめる|要点|概要|总结|概括|摘要|归纳|简述|かいつまんで"),
        (1.5, "まとめ|一句话|三行|3行|简要|簡潔"),
    ),
    "extract": (
        (4.0, "抜き出|抽出|取り出|分類|提取|抽取|分类|ポジティブ|ネガティブ|肯定的|否定的|感情分析|情感"
         "|正面还是负面|积极还是消极|正面|负面|中性|褒义|贬义|判断下面|判断这|判定|感情|短くして|簡潔に"
         "|ざっくり"),
        (2.0, "一覧|列挙|表に|找出|列出|识别|表格|JSON|json|登場する|出てくる|提到|出现的"),
    ),
    "translate": (
        (4.0, "翻訳|訳して|訳す|翻译|译成|翻成|译为|英訳|和訳|怎么说|何と言|なんて言|語にして|語に直して"
         "|語で言うと|語でなんて|用英语|用日语|用中文|成英文|成中文|成日文|成日语|成英语|归类|标注"
         "|リストアップ|書き出して|挙げて|どれが"),
        (2.0, "英語で|英语|日语|中文|英文|日本語で"),
    ),
    # greetings count fully only in short messages (engine.classify discounts them in long ones)
    "greeting": (
        (3.0, "こんにちは|こんばんは|おはよう|ありがとう|你好|您好|谢谢|早上好|晚上好|再见|さようなら"),
    ),
    "chat": (
        (2.0, "おすすめ|推荐|怎么样|元気|天気|天气"),
    ),
}
# fmt: on
# fmt: on


# Targets of a "translate/convert/port ... into X" request: a natural language makes it a
# translation, a programming language makes it a code task ("translate this into idiomatic Python").
LANGUAGES = (
    "english|spanish|french|german|italian|portuguese|dutch|polish|russian|ukrainian|japanese|chinese"
    "|mandarin|cantonese|korean|arabic|hindi|bengali|urdu|turkish|vietnamese|thai|indonesian|malay"
    "|tagalog|filipino|greek|swedish|norwegian|danish|finnish|icelandic|czech|slovak|hungarian|romanian"
    "|bulgarian|serbian|croatian|hebrew|persian|farsi|swahili|latin|catalan|basque|galician|irish|welsh"
    "|inglés|español|francés|alemán|italiano|portugués|japonés|chino|anglais|français|allemand|espagnol"
    "|italien|japonais|chinois|englische|deutsche|französische|spanische|italienische|japanische"
    "|chinesische|englisch|deutsch|französisch|spanisch"
)
PROGRAMMING_LANGUAGES = (
    "python|python3|javascript|js|typescript|ts|java|kotlin|go|golang|rust|c|cpp|ruby|php|swift|scala"
    "|haskell|perl|lua|elixir|dart|r|julia|matlab|bash|shell|powershell|sql|pandas|numpy|react|vue|es6"
)
# Head nouns after "write / compose / create / give me": the nearest one decides whether the
# requested artefact is a program or a piece of writing ("write a Python program that prints
# haiku" is code, "write a story about a Python interpreter" is creative).
CODE_NOUNS = (
    "function|functions|script|scripts|program|programs|programme|class|method|query|queries|regex|regexp"
    "|one-liner|dockerfile|makefile|test|tests|suite|module|cli|api|endpoint|component|hook|decorator"
    "|algorithm|implementation|snippet|code|macro|shader|sql|loop|parser|server|bot|app|website|webpage"
    "|procedure|trigger|migration|schema|pipeline|workflow|config|función|funcion|fonction|funktion"
    "|programa|skript|requête|requete|consulta"
)
CREATIVE_NOUNS = (
    "poem|poems|poetry|haiku|haikus|limerick|limericks|sonnet|villanelle|ballad|ode|song|songs|lyrics|rap"
    "|verse|verses|story|stories|tale|tales|fable|novel|scene|dialogue|monologue|screenplay|joke|jokes"
    "|pun|puns|riddle|slogan|slogans|tagline|taglines|jingle|toast|speech|letter|eulogy|myth|legend"
    "|prologue|epilogue|chapter|opening|character|villain|backstory|caption|captions|blurb|ad|advert"
    "|commercial|greeting|invitation|auto-reply|bio|lullaby|anthem|hymn|serenade|elegy|epitaph|vows|diary"
    "|folktale|parable|allegory|satire|parody|skit|sketch|trailer|voiceover|couplet|couplets|stanza"
    "|poema|cuento|historia|chiste|canción|gedicht|geschichte|märchen|witz|lied|poème|histoire|conte|blague"
    "|chanson"
)


# --- intent phrases that need more than a word list ---------------------------------------------
# Compiled here, once, at import. Patterns run on the lower-cased, whitespace-normalised instruction.
# "translate/convert/put ... into X": the target word decides between a translation and a code port
CONVERT_VERB = re.compile(
    r"\b(?:translat\w*|convert\w*|port|porting|rewrite|re-write|turn|traduc\w*|übersetz\w*|tradui\w*|traduz\w*"
    r"|put|render|write|say)\b"
)
INTO = re.compile(r"\b(in|into|to|en|a|al|nach|ins|auf|vers)\s+([\w+#'-]+(?:\s+[\w+#'-]+){0,2})")
SHORT_QUOTE = re.compile(r"(?:^|[\s:(])['\"«「“„][^'\"»」”\n]{1,60}['\"»」”]")
SENTENCE_END = re.compile(r"[.?!\n]")
WRITE_WHAT = re.compile(
    r"\b(?:write|compose|create|implement|build|make|generate|give me|code up|draft|craft|pen|come up with"
    r"|escribe|escríbeme|escribir|crea|écris|écrivez|écrire|crée|schreib|schreibe|erstelle|erfinde|invente|inventa)"
    r"\b((?:\s+[^\s.?!]+){1,6})"
)
REFACTOR_EXTRACT = re.compile(
    r"\bextract\w*\b[^.?!\n]{0,50}?\b(?:logic|code|method|function|class|component|hook|helper|module|constant"
    r"|variable|interface|into (?:a|its own|a separate|separate))\b"
)
NEGATION = re.compile(
    r"\b(?:no|not|don't|dont|do not|doesn't|without|never|no need for|don't need|dont need|no actual)\b"
    r"(?:\s+\S+){0,3}?\s+(?:(?P<code>code|sql|coding|programming|fix anything|fix it)|(?P<math>math|maths|formula"
    r"|formulas|calculation|calculations|equations?|exact numbers|the numbers|proof))\b"
)
WHAT_CODE_DOES = re.compile(
    r"\bwhat (?:exactly )?(?:this|the|my|that) (?:function|code|script|query|regex|regexp|class|snippet|command"
    r"|method|program|line|loop|expression|pipeline|one-liner|sql|component|hook|error)\b"
    r"|\bwhat (?:exactly )?(?:does|do) (?:this|that|it)(?: \w+)? (?:do|return|print|output)\b"
)


def _words(spec: str) -> frozenset[str]:
    return frozenset(spec.lower().replace("|", " ").split())


# "EN -> FR", "JP → EN": language codes (or names) around an arrow
LANG_CODES = _words("en es fr de it pt ja jp zh cn ko ru nl pl english spanish french german italian japanese chinese")
PAIR_ARROWS = frozenset({">", "→"})
PROG_WORDS = _words(PROGRAMMING_LANGUAGES)
LANG_WORDS = _words(LANGUAGES)
TARGET_WORDS = PROG_WORDS | LANG_WORDS
CODE_NOUN_SET = _words(CODE_NOUNS)
NOT_A_PORT = frozenset({"put", "say", "write", "render"})  # "write it in Python" is not a port of given code
CREATIVE_NOUN_SET = _words(CREATIVE_NOUNS)
# "the French version of", "the Spanish word for", "the Korean for"
LANG_NOUN_AFTER = frozenset({"version", "translation", "equivalent"})
WRITE_VERBS = _words(
    "write compose create implement build make generate give code draft craft pen come escribe escríbeme escribir"
    " crea écris écrivez écrire crée schreib schreibe erstelle erfinde invente inventa"
)
DOC_DEIXIS = frozenset({"this", "that", "these", "each"})
NEGATORS = frozenset({"no", "not", "don't", "dont", "doesn't", "without", "never"})
# Nouns naming given material; the patterns below capture a noun slot and the set decides.
DOC_NOUN_SET = _words(
    "text texts passage article articles email e-mail emails message messages paragraph paragraphs document report"
    " transcript notes note review reviews tweet tweets post posts chat chats thread log letter memo abstract clause"
    " section page listing invoice receipt resume cv label excerpt essay chapter announcement newsletter minutes"
    " conversation changelog release posting description bio sentence sentences statement contract comment"
    " comments feedback survey lines data table list caption form menu ticket tickets bill schedule itinerary"
    " confirmation record records file poem song verse story lyrics quote snippet config update headline headlines"
    " request requests complaint complaints reply replies sms"
)
CODE_MATERIAL_SET = DOC_NOUN_SET | _words("query code script function class diff output json xml html csv")
_DET = r"(?:this|these|the following|the above|the below|the attached|that|the)"
IS_THIS_DOC = re.compile(
    rf"\b(?:is|does|are|which of) {_DET} ([\w-]+)(?: ([\w-]+))? (?:about|a|an|positive|negative|neutral|spam"
    r"|sarcastic|urgent|related|relevant|written|in|more|likely|asking|mentions?|contains?|talking|complaining"
    r"|expressing|toxic|offensive)\b"
)
ASK_WORDS = _words("what what's which who when where how list give find get show")
IN_DOC = re.compile(rf"\b(?:in|on|from|within) {_DET}\s+([\w-]+(?:\s+[\w-]+){{0,2}})")
FROM_DOC_ASK = re.compile(
    rf"\bfrom {_DET}\s+([\w-]+(?:\s+[\w-]+){{0,2}}?)(?: below| above)?,?\s*(?:please\s+)?"
    r"(?:tell me|give me|list|find|get|show|what|which|who|how many|pull|return|output|identify)\b"
)
GERMAN_COMPOUND = re.compile(r"\w(?:geschichte|gedicht|märchen|liedtext)\b")
CREATIVE_MATERIAL = re.compile(
    r"\b(?:this|these|the following|that|the above|the below|the)\s+(?:[\w-]+\s+){0,2}(?:poem|song|verse|story|lyrics"
    r"|joke|haiku|limerick|speech|letter|novel|tale|fable|dialogue|scene|slogan|caption)\b"
)
INTO_FORMAT = re.compile(
    r"\b(?:turn|convert|put|format|organi[sz]e|reformat|transform|parse|structure)\b[^.?!]{0,50}?\binto (?:an? )?"
    r"(?:json|csv|tables?|key[/ -]value|spreadsheet|yaml|xml|structured|fields|columns|rows|records|bullet list)"
)
PULL_OUT = re.compile(
    r"\b(?:pull|get|grab|fish|dig|pick|take)\b(?:\s+\S+){0,4}?\s+out\s+(?:of\s+)?(?:this|the|these|that|my|from)\b"
)
LEAD_VERB = re.compile(
    r"(?:^|[.!?:;]\s+)(?:(?:please|pls|plz|just|now|also|then|kindly|can you|could you|would you|will you|can u"
    r"|hey|hi|ok|okay|so|quick|bitte|por favor|s'il te plaît|stp)\s+)*([^\W\d_]+)"
)
MAIN_VERBS: dict[str, str] = {
    **dict.fromkeys(
        "extract list classify categorize categorise tag label parse identify detect pull fill extrae extraer"
        " extrahiere extrahieren extrais extrayez clasifica klassifiziere classe liste".split(),
        "extract",
    ),
    **dict.fromkeys(
        "summarize summarise condense shorten recap tldr tl resume resumen resúmelo résume résumez résumer fasse"
        " fass zusammenfassen sintetiza".split(),
        "summarize",
    ),
    **dict.fromkeys(
        "translate traduce tradúceme traducir traduis traduisez traduire übersetze übersetz übersetzen localize"
        " localise".split(),
        "translate",
    ),
    **dict.fromkeys("fix debug refactor implement optimize optimise port".split(), "code"),
    **dict.fromkeys(
        "solve calculate compute prove simplify differentiate integrate factor derive resuelve calcula calcule"
        " berechne löse résous démontre beweise".split(),
        "math",
    ),
    **dict.fromkeys(
        "write compose pretend roleplay escribe escríbeme schreib schreibe écris écrivez invent invente inventa"
        " erfinde brainstorm".split(),
        "creative",
    ),
    **dict.fromkeys(
        "compare weigh assess analyze analyse critique prioritize prioritise decide argue".split(), "reasoning"
    ),
}


FASSE_ZUSAMMEN = re.compile(r"\bfass\w*\b[^.?!\n]{0,80}\bzusammen\b")
RESUME_ES_FR = re.compile(
    r"\bresume\s+(?:este|esta|estos|estas|el|la|los|las|lo|en|brevemente|ce|cet|cette|ces|le|les)\b"
)
DOC_REF = re.compile(
    r"\b(?:this|these|the following|following|below|above|attached|here's|here is|the)\s+(\S+(?:\s+\S+){0,2})"
)
DOC_REF_OTHER = re.compile(
    r"\b(?:siguiente|este texto|este artículo|folgenden|diesen text|diesen artikel|ce texte|cet article|suivant)\b"
    r"|次の|以下の|下面|这段|这篇|以下"
)


# --- tokens: words of Latin scripts (apostrophes kept: "what's"), every other non-space character alone
LETTERS = "0-9a-z_à-öø-ÿß"
TOKEN = re.compile(f"[{LETTERS}]+(?:'[{LETTERS}]+)*|\\S")

# --- splitting a prompt into instruction and passage -------------------------------------------
FENCE = re.compile(r"```[^\n`]*\n?(.*?)(?:```|\Z)", re.S)
PARA = re.compile(r"\n\s*\n")
QUOTE = re.compile(
    r"'(?<![^\s:(\[]')[^'\n]{30,}?'(?=[\s.,;:!?)\]]|$)"
    r'|"[^"\n]{30,}?"|“[^”]{30,}?”|«[^»]{30,}?»|„[^“”]{30,}?[“”]|「[^」]{2,}?」|『[^』]{2,}?』'
)
INLINE_CODE = re.compile(r"`[^`\n]+`")
# a first paragraph that only presents what follows ("Here's the text:"): the request may come after it
PRESENTS = re.compile(
    r"\s*(?:here(?:'s| is| are)|this is|these are|below|i got|i have|i've got|i received|my |the following)", re.I
)
# a paragraph that starts like data (list, heading, table, quote, "Name: ...", a number) is passage
PAYLOADISH = re.compile(r"\s*(?:[-*#>|{\[(\d\"'“«„「•★]|[\w.-]+(?: [\w.()-]+){0,3}: )")

# --- structure ---------------------------------------------------------------------------------
# Every alternative of the scanning patterns below starts with a literal character, which lets `re`
# skip to candidate positions in C instead of trying each alternative at every position.
TRACE = re.compile(
    r"Traceback \(most recent call last\)|\n[ \t]+at [\w$.<>/]+ ?\(|error\[E\d+\]"
    r"|Error(?<=[A-Za-z]Error)(?::|\s+in\b)|Exception(?<=[A-Za-z]Exception)(?::|\s+in\b)|Segmentation fault"
    r"|panicked at|npm ERR!|fatal: |Uncaught \w+"
    r"|undefined reference|cannot find symbol|File \"[^\"\n]+\", line \d+|--> [\w./]+:\d+:\d+"
)
CODE_LINE = re.compile(
    r"^\s*(?:def |class |import |from [\w.]+ import |function\b|const |let |var |public |private |protected "
    r"|static |return\b|if\s*\(|for\s*\(|while\s*\(|#include|using |package |fn |func |async |await |try:"
    r"|except\b|elif |else:|SELECT\b|INSERT\b|UPDATE\b|DELETE\b|CREATE\b|FROM\b|WHERE\b|(?:LEFT |INNER )?JOIN\b"
    r"|GROUP BY\b|ORDER BY\b|\$ |sudo |<\w+[^>]*>|[\w.\[\]]+\s*(?:=|\+=|:=|==)\s*\S)|[;{}]\s*$",
    re.M,
)
MATH = re.compile(
    r"\^(?<=[a-z0-9)]\^)\s*\(?-?[\da-z]|²(?<=[a-z0-9)]²)|³(?<=[a-z0-9)]³)|∫|∑|∏|√|π|∞|≤|≥|≠|±|÷|∂"
    r"|=(?:(?<=[\w)]=)|(?<=[\w)] =))\s*[-\w(]|\*(?<=\d\*)\s*\(?\d|\*(?<=\d \*)\s*\(?\d|×(?<=\d×)\s*\d|×(?<=\d ×)\s*\d"
    r"|-(?<=\d -)\s+\(?\d|\+(?<=[\d)a-z] \+)\s+\(?\d|/(?<=\d /)\s+\(?\d|/(?<=d[a-z]/)d[a-z]\b"
    r"|%(?<=\d%)\s*(?:of|de|von|du|des)\s+\$?\d|sin\s*\(|cos\s*\(|tan\s*\(|log\w*\s*\(|ln\s*\(|exp\s*\("
    r"|sqrt\s*\(|\[\[|\|(?=\s*-?\d+\s+-?\d+)"
)
SQL = re.compile(
    r"SELECT\s[\s\S]{1,300}?\bFROM\s+\w|select\s+[\w.*]+(?:\s*,\s*[\w.*()]+)*\s+from\s+\w"
    r"|INSERT INTO\s|insert into\s+\w+\s*\(|CREATE TABLE\s|create table\s+\w+\s*\(|UPDATE\s+\w+\s+SET\s|DELETE FROM\s"
)
MONEY_OR_PERCENT = re.compile(
    r"\d\s?%|[$€£¥]\s?\d|\d\s?(?:€|eur|euros?|usd|dollars?|km|kg|cm|mm|m|g|mg|l|ml|mph|km/h|m/s|°c?|°f?)(?![\w/])"
)
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
QUANTITY_Q = re.compile(
    r"\b(?:how (?:many|much|long|far|fast|high|old|big|tall)|what (?:is|are|was|'s) the (?:probability|chance|odds"
    r"|percentage|total|average|area|volume|value|sum|expected|interest)|what percent|in what year"
    r"|when (?:does|will|do|did) (?:the|it|he|she|they)\b|find the|calculate|compute|what's the"
    r" (?:probability|chance|area|volume|value|sum|total)|% of)"
)
